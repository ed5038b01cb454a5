"""OpenMP threads pinned one per core in a job that holds its cores, so speed is the libraries'.

Why.  Measured on this project's 2-core VM (AMD EPYC, threads 2): an HQQ 4-bit Whisper
base decode took either ~2.3 s or ~3.6 s, the slow state lasting from one decode to a
whole process, while fp32 decodes beside it stayed at ~1.9 s; so HQQ's paired speedup
was 0.79 in one job and 0.51 in the next.  The slow decodes took what the same decode
takes on one thread (3.4-3.6 s): Linux's scheduler had put both OpenMP threads on one
core, and the dequantize-then-multiply kernels of HQQ (and quanto, bitsandbytes) suffer
from that far more than fp32's GEMM.  With the threads bound one per core
(``OMP_PROC_BIND=close``, ``OMP_PLACES=cores``, read by GNU and LLVM/Intel OpenMP when
the runtime loads), five processes of ten pairs each showed no slow decode.  A deployment
that cares about speed pins its threads too (whisper.cpp and CTranslate2 users set
affinity), so the bound figure is the one a user can reproduce.

When.  Only a job that holds every core it may run on (a local job that claimed all
cores, a SLURM task in its own cpuset, or ``threads`` equal to the cores in its
affinity mask) is bound: binding two jobs that share a machine would stack both on its
first cores.  A user's own ``OMP_PROC_BIND`` / ``OMP_PLACES`` is left alone.  The
variables must be set before the OpenMP runtime loads (``import torch``), so a job
script calls :func:`bind_openmp_threads` first; what it did is recorded with every
timing (``thread_binding``).
"""

from __future__ import annotations

import os
import sys

#: The modules whose import loads an OpenMP runtime (after which binding can no longer be set).
_OPENMP_LOADERS = ("torch", "ctranslate2")


def available_cores() -> int:
    """The cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bind_openmp_threads(threads: int, holds_all_cores: bool, environ: dict | None = None) -> dict:
    """Pin OpenMP threads one per core when this job holds its cores; return what was done.

    ``holds_all_cores``: no other job of the workflow runs on this process' cores (the
    job claimed them all).  ``environ``: the environment to change (``os.environ``).
    The returned dict (``bound``, ``how`` or ``reason``) goes into the timing record.
    """
    env = os.environ if environ is None else environ
    cores = available_cores()
    if env.get("OMP_PROC_BIND") or env.get("OMP_PLACES"):
        return {"bound": None, "how": f"as set by the user: OMP_PROC_BIND={env.get('OMP_PROC_BIND', '')!r} "
                                      f"OMP_PLACES={env.get('OMP_PLACES', '')!r}"}
    loaded = [m for m in _OPENMP_LOADERS if m in sys.modules]
    if loaded and environ is None:
        return {"bound": False, "reason": f"not bound: {loaded[0]} was imported before the job could bind"}
    if not (holds_all_cores or threads >= cores):
        return {"bound": False, "reason": (f"not bound: the job's {threads} thread(s) share this machine's "
                                           f"{cores} cores with other jobs, so the OS places them")}
    env["OMP_PROC_BIND"] = "close"
    env["OMP_PLACES"] = "cores"
    return {"bound": True, "how": f"OMP_PROC_BIND=close OMP_PLACES=cores: {threads} thread(s) on {cores} core(s)"}
