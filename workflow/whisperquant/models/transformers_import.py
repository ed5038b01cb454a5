"""Keep transformers from importing the optional integrations a job does not use.

When hqq or torchao is installed, importing transformers' modelling code imports it too:
``cache_utils`` imports ``hqq.core.quantize`` for its quantised KV cache, and the quantizer registry
imports torchao's safetensors support (with torchao's warnings about kernels this machine cannot
load).  This workflow never reaches either through transformers: its HQQ, torchao and PT2E backends
call the libraries themselves (``quantize/backends/``), and it uses no quantised KV cache.  Yet every
job that loads a model paid for both imports: 1.2 of the 8.9 CPU-seconds that
``from transformers import WhisperForConditionalGeneration, WhisperProcessor`` took on a quiet 2-core
AVX2 EPYC (mean of 5; 2.5 of 10 beside another run), in each of the hundred-odd jobs of the suite
(``tests/test_transformers_import.py`` checks the mechanism; README: Layout).

:func:`hide_unused_integrations` makes transformers' availability probes (its
``_is_package_available``, which asks ``importlib.util.find_spec``) answer "not installed" for
those packages, unless the job's library is one that runs them.  Only transformers' probes are
answered so: any other ``find_spec`` and every ``import hqq`` by our code behave as before.  It
imports nothing, so a job that never imports transformers pays nothing.
"""

from __future__ import annotations

import importlib.util
import sys

#: An installed package transformers imports with its modelling code -> the libraries of ours that run it.
OPTIONAL_INTEGRATIONS: dict[str, tuple[str, ...]] = {"hqq": ("hqq",), "torchao": ("torchao", "pt2e")}
#: The module whose ``find_spec`` calls are transformers' availability probes.
_PROBES = "transformers.utils.import_utils"


def hidden_for(library: str | None) -> set[str]:
    """The packages transformers is not to import in a job of ``library`` (None: a job without one)."""
    return {package for package, users in OPTIONAL_INTEGRATIONS.items() if library not in users}


def hide_unused_integrations(library: str | None = None) -> set[str]:
    """From now on in this process, transformers' probes find none of :func:`hidden_for` ``(library)``.

    Returns the packages hidden: none when transformers' modelling code is already imported (its
    probes have answered) or when the library uses every such package.  Call it before anything
    imports transformers; calling it again changes nothing.
    """
    hidden = {p for p in hidden_for(library) if p not in sys.modules}
    if "transformers.modeling_utils" in sys.modules or not hidden or hasattr(importlib.util.find_spec, "hidden"):
        return set()
    find_spec = importlib.util.find_spec

    def probe(name: str, package: str | None = None):
        if name in hidden and sys._getframe(1).f_globals.get("__name__") == _PROBES:
            return None
        return find_spec(name, package)

    probe.hidden = frozenset(hidden)
    importlib.util.find_spec = probe
    return hidden
