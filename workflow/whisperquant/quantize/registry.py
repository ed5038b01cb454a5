"""The backend registry: libraries by name, imported only when a job uses one.

Built-in backends are the modules of :mod:`whisperquant.quantize.backends`;
a module's file name is its library name (``backends/hqq.py`` -> ``hqq``) and
it defines exactly one :class:`~whisperquant.quantize.base.Backend` subclass
whose ``library`` attribute says the same.  Listing them reads the folder, not
the modules, so planning a DAG (``snakemake -n``, and every SLURM job's
re-parse of the Snakefile) imports no backend and no torch until a scheme of
that library is resolved -- and backend modules themselves import their
library (torch, hqq, quanto, ...) only inside the methods that run it.

Code outside the package (a plugin, a test) adds a library with the
:func:`register` class decorator; a registered class wins over a built-in
module of the same name.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from .errors import SchemeError

if TYPE_CHECKING:
    from .base import Backend

_REGISTERED: dict[str, type[Backend]] = {}
_BUILTIN_PACKAGE = "whisperquant.quantize.backends"


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` the backend of ``cls.library``."""
    library = getattr(cls, "library", None)
    if not isinstance(library, str) or not library:
        raise TypeError(f"{cls.__name__} must set a class attribute `library` (its name in the config)")
    _REGISTERED[library] = cls
    _load.cache_clear()
    return cls


def unregister(library: str) -> None:
    """Remove a library added with :func:`register` (tests)."""
    _REGISTERED.pop(library, None)
    _load.cache_clear()


@cache
def _builtin_names() -> tuple[str, ...]:
    from . import backends

    return tuple(sorted(m.name for m in pkgutil.iter_modules(backends.__path__) if not m.name.startswith("_")))


def libraries() -> list[str]:
    """Every library a scheme may name (built-in and registered), sorted; imports nothing."""
    return sorted(set(_builtin_names()) | set(_REGISTERED))


@cache
def _load(library: str) -> type[Backend]:
    if library in _REGISTERED:
        return _REGISTERED[library]
    from .base import Backend

    module = importlib.import_module(f"{_BUILTIN_PACKAGE}.{library}")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Backend) and obj.__module__ == module.__name__
             and getattr(obj, "library", None) == library]
    if len(found) != 1:
        raise TypeError(f"{module.__name__} must define exactly one Backend subclass with library = {library!r}, "
                        f"found {len(found)}")
    return found[0]


def get_backend(library: str) -> Backend:
    """A fresh instance of the backend of ``library``; SchemeError naming the valid ones if unknown."""
    if not isinstance(library, str) or library not in libraries():
        raise SchemeError(f"unknown library {library!r}; valid: {', '.join(libraries())}")
    return _load(library)()
