"""Corpus sources: one module per source; the file name is a corpus' ``source`` in the config.

Each module defines ``build(name, spec, out_dir, cache_dir, upstream)``, which
writes ``out_dir/manifest.tsv`` and the 16 kHz WAVs (see
:mod:`whisperquant.data.manifest`) and returns the manifest path.  A corpus
whose spec has a ``from`` key derives from that corpus, whose manifest the
workflow passes as ``upstream``.  Modules are imported only when a corpus of
that source is built.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path


def names() -> list[str]:
    """Every corpus source, from the module names (nothing is imported)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build(name: str, spec: dict, out_dir: str | Path, cache_dir: str | Path,
          upstream: str | Path | None = None) -> Path:
    """Build corpus ``name`` from its config ``spec`` with the module of ``spec['source']``."""
    source = spec.get("source")
    if source not in names():
        raise ValueError(f"corpora.{name}.source: unknown source {source!r}; valid: {', '.join(names())}")
    module = importlib.import_module(f"{__name__}.{source}")
    return module.build(name, spec, Path(out_dir), Path(cache_dir), Path(upstream) if upstream else None)
