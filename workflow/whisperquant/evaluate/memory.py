"""What a loaded model holds in memory: the growth of the process' resident memory across loading.

``model_mem_mb`` in a timing record is :func:`load_measured`'s figure: resident memory
just after the artifact is loaded minus just before, each after garbage collection with
the C heap's freed pages handed back (:func:`settled_rss_mb`), and with every tensor a
loader left memory-mapped read once (:func:`fault_in`), so a loader that maps its file
and one that reads it count the same.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..quantize.base import Backend


def peak_rss_mb() -> float:
    """The process' peak resident memory so far (``ru_maxrss``), MB."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (not Linux, or a libc without it such as musl); looked up once."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).malloc_trim  # the process' own symbols: glibc's where it is linked
    except (OSError, AttributeError):
        return None


#: mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks at least this large are mapped fresh by glibc (its own ceiling for the threshold, 64-bit).
MMAP_THRESHOLD_BYTES = 32 * 2**20


def hold_freed_heap() -> dict:
    """Fix glibc's allocator in one regime for the rest of the process, so a decode's speed does not
    depend on what the heap did before it; returns what was done (kept in the timing record).

    Why.  By default glibc moves its mmap threshold up as large blocks are freed and trims the
    heap's top whenever enough of it is free, so whether a decode's transient buffers come from
    pages already resident or from fresh zeroed pages depends on the order of earlier frees.  The
    libraries that dequantise weights on every forward allocate megabytes per Linear per token:
    measured on this project (2-core AMD EPYC, AVX2; HQQ 4-bit Whisper base, one timing unit), the
    same decode took 0 to 80,000 page faults from one repetition to the next by default and none
    after this call, and the spread of its paired ratios against fp32 fell from 7.3 % to 4.7 %.
    Blocks under 32 MiB then always reuse the heap and the heap is never trimmed on its own.  A
    transcription job calls it only for its timing phase, after the accuracy pass whose peak memory
    it records: held, freed memory stays resident (quanto int8's job peaked 16 % higher when the
    whole job ran held), which a user's process with glibc's defaults would not show.  A user's
    own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` is left alone.
    """
    import ctypes
    import os

    if not sys.platform.startswith("linux"):
        return {"held": False, "reason": "not glibc on Linux"}
    users = {k: os.environ[k] for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if k in os.environ}
    if users:
        return {"held": None, "how": f"as set by the user: {users}"}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {"held": False, "reason": "no mallopt in this C library (not glibc)"}
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        return {"held": False, "reason": "mallopt refused the thresholds"}
    return {"held": True, "how": f"glibc mmap threshold fixed at {MMAP_THRESHOLD_BYTES >> 20} MiB, no automatic trim"}


def settled_rss_mb() -> float:
    """Resident memory after garbage collection, with the C heap's freed pages handed back.

    Loading builds transient buffers (unpacking, repacking, conversions); glibc keeps
    their freed pages resident, which measured 25 MB for torch.ao's int8 prepacking
    and 65 MB for quanto int4's requantisation here -- memory the model does not hold.
    ``malloc_trim(0)`` returns them; where glibc is absent the figure includes them.
    """
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return rss_mb()


def fault_in(model) -> None:
    """Read every plain tensor of ``model`` once, so weights a loader left memory-mapped count as resident.

    (A mapped page is resident only once touched; without this, a loader that maps
    the file would look smaller than one that reads it.)  Packed and wrapper tensors
    of the quantisation libraries are built in memory the process owns.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        return  # an engine's session: its runtime read the artifact into memory it owns
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.device.type == "cpu" and not t.is_quantized and not hasattr(t, "__tensor_flatten__") and t.numel():
                t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()  # one element per 4 KiB page


def load_measured(backend: Backend, model_dir: Path, params: dict, artifact_dir: Path, device: str
                  ) -> tuple[Any, float, float]:
    """(the model of ``artifact_dir`` loaded by ``backend``, the memory it holds in MB, seconds to load).

    The modelling code's imports and first-use set-up happen before the first reading (they
    are not the model's), so with the backends that load onto a meta skeleton no fp32 copy
    is counted.
    """
    from ..quantize.modules import architecture

    architecture(model_dir)  # the modelling code's imports and first-use set-up are not the model's
    rss0 = settled_rss_mb()
    t0 = time.perf_counter()
    model = backend.load(model_dir, params, artifact_dir, device)
    fault_in(model)
    return model, settled_rss_mb() - rss0, time.perf_counter() - t0
