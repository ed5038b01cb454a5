"""OpenMP threads pinned one per core in a job that holds its cores, so speed is the libraries'.

Why.  Where the OS puts a job's threads is one more thing that moves a timing, and a
deployment that cares about speed pins them (whisper.cpp and CTranslate2 users set
affinity), so the bound figure is the one a user can reproduce.  Measured on this
project's 2-core VM (AMD EPYC, threads 2): an unbound process of HQQ 4-bit Whisper base
ran every decode at one-thread speed (~3.6 s instead of ~2.3 s; fp32 beside it ~1.9 s),
which made stacked threads the first suspect for the two-speed decodes of the
dequantizing libraries.  Binding is not the cure: bound, HQQ still switched between
2.25-2.31 s and 3.60-3.78 s decodes within one job of a quiet default run.

When.  Only a job that holds every core it may run on (a local job that claimed all
cores, a SLURM task in its own cpuset, or ``threads`` equal to the cores in its
affinity mask) is bound: binding two jobs that share a machine would stack both on its
first cores.  A user's own ``OMP_PROC_BIND`` / ``OMP_PLACES`` is left alone.  The
variables must be set before the OpenMP runtime loads (``import torch``), so a job
script calls :func:`bind_openmp_threads` first; what it did is recorded with every
timing (``thread_binding``).
"""

from __future__ import annotations

import contextlib
import os
import sys

#: The modules whose import loads an OpenMP runtime (after which binding can no longer be set).
_OPENMP_LOADERS = ("torch", "ctranslate2")


def available_cores() -> int:
    """The cores this process may run on: the union of its threads' affinity masks (``os.cpu_count()``
    where unknown).

    The union, not the calling thread's own mask: once OpenMP has bound its threads one per core
    (:func:`bind_openmp_threads`), the main thread's mask is its one core, and a job computing on two
    cores called itself a one-core host (every bound transcription's host record said ``1c`` while its
    quantize record, unbound, said ``2c``).
    """
    if not hasattr(os, "sched_getaffinity"):
        return os.cpu_count() or 1
    cores = set(os.sched_getaffinity(0))
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return len(cores)
    for tid in tasks:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            cores |= os.sched_getaffinity(int(tid))
    return len(cores)


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
