"""Import transformers' modelling code without the optional integrations a job does not use.

When hqq or torchao is installed, ``import transformers`` imports it too: ``cache_utils`` imports
``hqq.core.quantize`` for its quantised KV cache, and the quantizer registry imports torchao's
safetensors support (with torchao's warnings about kernels this machine cannot load).  This workflow
never reaches either through transformers: its HQQ, torchao and PT2E backends call the libraries
themselves (``quantize/backends/``), and it uses no quantised KV cache.  Yet every job that loads a
model paid for both imports: about 2 of the 8 CPU-seconds that ``from transformers import
WhisperForConditionalGeneration`` took on a 2-core EPYC (measured with ``getrusage``), and a
Snakemake run of the suite starts over a hundred such jobs.

:func:`import_transformers` imports transformers once with those packages hidden from its
availability probes (``importlib.util.find_spec`` answers None for them while it imports), unless the
job's library is one that runs them.  Hidden means only that transformers' own ``is_hqq_available()``
/ ``is_torchao_available()`` answer False in that process; an ``import hqq`` by our code still works.
"""

from __future__ import annotations

import importlib.util
import sys

#: An installed package transformers imports at start-up -> the libraries of ours that run it.
OPTIONAL_INTEGRATIONS: dict[str, tuple[str, ...]] = {"hqq": ("hqq",), "torchao": ("torchao", "pt2e")}


def hidden_for(library: str | None) -> set[str]:
    """The packages transformers is not to import in a job of ``library`` (None: a job without one)."""
    return {package for package, users in OPTIONAL_INTEGRATIONS.items() if library not in users}


def import_transformers(library: str | None = None) -> set[str]:
    """Import ``transformers.modeling_utils`` with :func:`hidden_for` ``(library)`` hidden from its probes.

    Returns the packages that were hidden; an empty set when transformers' modelling code was
    already imported (its probes have answered, so nothing can be hidden any more) or when the
    library uses every one of them.
    """
    hidden = {p for p in hidden_for(library) if p not in sys.modules}
    if "transformers.modeling_utils" in sys.modules or not hidden:
        return set()
    find_spec = importlib.util.find_spec

    def probe(name: str, package: str | None = None):
        return None if name.partition(".")[0] in hidden else find_spec(name, package)

    importlib.util.find_spec = probe
    try:
        import transformers.modeling_utils  # noqa: F401
    finally:
        importlib.util.find_spec = find_spec
    return hidden
