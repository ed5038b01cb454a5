"""Which code made an output: each stage's code digest, read from the package's sources.

Snakemake reruns a job when one of its params changes; each rule's ``code`` param is
:func:`code_digest` of its stage, so an edit to a module reruns exactly the stages whose
job functions import it (statically, nothing imported: planning imports no torch).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

#: Where each stage's work starts: ``module:function`` (package-relative) or a whole ``module``,
#: what the stage's script (``workflow/scripts/*.py``) calls.  A stage's code digest counts the
#: package code reachable from here by its imports (:func:`code_digest`); adding a stage is one line.
STAGE_ENTRIES = {
    "model": ("jobs:import_model_job",),
    "corpus": ("jobs:build_corpus_job",),
    "graphs": ("jobs:export_graphs_job",),
    "quantize": ("jobs:quantize_job",),
    "transcribe": ("jobs:transcribe_job", "evaluate.threads"),  # the script binds threads first
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
