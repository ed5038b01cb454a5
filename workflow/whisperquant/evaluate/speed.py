"""Speed a user can rank by: paired, interleaved timing of a cell against its fp32 reference.

Why paired.  A shared VM, a laptop or a cluster node drifts by ±20 % from minute to
minute, whole cells together, so two cells timed minutes apart cannot be compared
(measured on this project: the same nf4 cell 0.87x fp32 on clean speech and 1.24x on
noisy speech in one run).  More repeats inside a cell do not help; timing the
reference in the same process and the same seconds does.  So every transcription job,
after its accuracy pass, loads the fp32 model of the same model and device and
decodes one fixed timing batch with both, in strict alternation::

    C R C R C ... R C        (C: the cell's model, R: fp32; one untimed warm-up of each first)

Each reference decode ``R_k`` makes a pair with the mean of the cell's decodes just
before and after it: ``speedup_k = R_k / ((C_k + C_{k+1}) / 2)``.  Every decode
follows a decode of the other model (no order effect: measured here, a decode right
after the same model's ran ~5 % faster than one right after the other's), and a
linear drift over the three decodes cancels.  The speedup is the Hodges-Lehmann
estimate of the pairs' log ratios with its Wilcoxon signed-rank 95 % interval
(:func:`~.stats.paired_speedup`): distribution-free like a median, but it uses the
pairs' magnitudes too, so the same pairs pin it tighter (simulated with this host's
noise, 5 % per decode and a drifting speed: SD of the estimate 2.1 % against the
median's 2.4 % at 12 pairs, where the decodes' own noise allows no less than 2.0 %;
the interval covered the true speedup in 92 % of simulated jobs, a little under its
95 % because neighbouring pairs share a decode).  A competing load slows both
halves of a pair alike.  One batch, not several: measured here, the speedup
differed by ~8 % between two units (their token counts differ), which a cycle
over batches would have turned into spread instead of signal.

The batch (:func:`timing_workload`) is the same for every scheme of a (model,
device, corpus): ``units`` scoring units around the corpus' median duration, never
the leftovers of the accuracy pass.  After ``min_pairs`` the job stops as soon as
the interval's half-width is within ``target_halfwidth`` of the estimate (or at
``max_pairs`` / ``max_s``, saying so in ``timing_stop``).  The fp32 cell, timed against
itself only to show the protocol's noise, stops at ``min_pairs``.

Stalls.  A process that is stopped in the middle of a decode (``SIGSTOP``, a SLURM
suspend or preemption, a debugger) makes that decode's wall time anything at all while
its CPU time stays put.  Such a decode (:func:`stalled_decodes`) voids the pairs it is in;
they are kept in the record (``voided_pairs``) and replaced by new ones.

Cores not shared.  Within a run, Snakemake gives a transcription job every core; other
processes on the host are not the workflow's to stop.  Measured here, two busy loops on
the two cores made every pair a lottery (PyTorch dynamic int8 over fp32 between 1.18
and 2.40 within one job, 3.5x slower in absolute terms: a preempted OpenMP thread
stalls every parallel region), which no pairing cancels.  So the timing phase asks the
OS to run it first (:class:`RaisedPriority`: every thread of the process at nice
``transcription.timing.nice``, -19 by default) where the OS allows it (root or
CAP_SYS_NICE on Linux) and records what it got; the accuracy pass and every other job
keep their normal priority.  With it, the same busy loops moved that speedup by 3 %.

A timed decode is feature extraction + ``generate`` (CUDA synchronised), as in the
accuracy pass.  Absolute RTFx (audio seconds per wall second) is reported too, with
its own interval, but it is this host's at this minute: compare it only within one
host and one run.  Cost per audio hour: core-seconds (wall x cores the job holds),
CPU seconds (the process' own CPU time) and, where the host exposes counters, energy
(powercap/RAPL package energy on CPU, NVML on GPU); never estimated from a TDP.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .stats import median_interval, paired_speedup

#: Keys of a timing record that are this run's measurements (they differ between two runs of one config).
MEASURED_KEYS = frozenset({
    "pairs", "pair_ratios", "voided_pairs", "cell_walls", "ref_walls", "cell_cpu_s", "ref_cpu_s", "self_ratio",
    "timing_stop", "timing_s", "speedup_vs_fp32",
    "speedup_low", "speedup_high",
    "rtfx", "rtfx_low", "rtfx_high", "fp32_rtfx", "fp32_rtfx_low", "fp32_rtfx_high", "rtf", "timed_wall_s",
    "timed_audio_s", "core_s_per_audio_h", "cpu_s_per_audio_h", "gpu_s_per_audio_h", "energy_j_per_audio_h",
    "load_1m_before", "load_1m_after",
})

#: A decode of one batch: () -> (wall seconds, process CPU seconds).
Decode = Callable[[Sequence[Any]], tuple[float, float]]


@dataclass(frozen=True)
class TimingSettings:
    """``transcription.timing`` of the config (config/README.md)."""

    units: int = 1
    nice: int | None = -19
    min_pairs: int = 6
    max_pairs: int = 12
    target_halfwidth: float = 0.02
    max_s: float = 60.0

    @classmethod
    def from_config(cls, cfg: dict | None) -> TimingSettings:
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def timing_workload(utts: Sequence[Any], units: int) -> list[Any]:
    """The fixed timing batch of a corpus: the ``units`` utterances nearest its median duration
    (ties by id), the same for every scheme and whatever the corpus' order.

    ``utts`` need ``id`` and ``duration``.  Around the median, not the longest or the first:
    the batch resembles the corpus without depending on its order.
    """
    if units < 1:
        raise ValueError(f"transcription.timing.units: {units}, must be >= 1")
    ordered = sorted(utts, key=lambda u: (u.duration, u.id))
    n = min(units, len(ordered))
    start = (len(ordered) - n + 1) // 2
    return ordered[start : start + n]


class RaisedPriority:
    """Every thread of this process at nice ``nice`` inside the block, restored after it.

    Linux keeps a nice value per thread (the OpenMP workers already exist), so each task
    of ``/proc/self/task`` is set; elsewhere the process.  Lowering nice needs root or
    CAP_SYS_NICE: without it, nothing changes and :attr:`outcome` says why.  ``None``:
    leave the priority alone.  A job started at a positive nice (``nice snakemake ...``)
    keeps it: its user asked for it to yield, even where root could raise it.
    """

    def __init__(self, nice: int | None) -> None:
        self.nice = nice
        self.outcome: dict = {"requested": nice, "applied": None}
        self._old: dict[int, int] = {}

    @staticmethod
    def _tasks() -> list[int]:
        try:
            return [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return [0]

    def __enter__(self) -> RaisedPriority:
        if self.nice is None or not hasattr(os, "setpriority"):
            self.outcome["reason"] = "not requested" if self.nice is None else "no setpriority on this OS"
            return self
        inherited = os.getpriority(os.PRIO_PROCESS, 0)
        if inherited > 0 and self.nice < inherited:
            # Whoever started the workflow lowered its priority (`nice snakemake ...`): that is their
            # call to make, so the timing phase does not jump ahead of their other work.
            self.outcome["reason"] = f"not raised: the job was started at nice {inherited} (lowered by its user)"
            return self
        try:
            for tid in self._tasks():
                self._old[tid] = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, self.nice)
            self.outcome["applied"] = self.nice
        except OSError as e:  # PermissionError without the privilege; a thread that ended
            self._restore()
            self.outcome["reason"] = f"not raised: {type(e).__name__}: {e}"[:200]
        return self

    def _restore(self) -> None:
        for tid, old in self._old.items():
            try:
                os.setpriority(os.PRIO_PROCESS, tid, old)
            except OSError:
                continue  # the thread has ended
        self._old.clear()

    def __exit__(self, *exc) -> None:
        self._restore()


class EnergyMeter:
    """Cumulative energy counters of the host, or the reason there are none.

    CPU: the package domains of ``/sys/class/powercap/intel-rapl:N`` (the kernel's RAPL
    interface, AMD's included), wrap-around handled.  GPU: NVML's total energy of the
    device (``nvidia-ml-py``), where installed.  Package energy includes whatever else
    runs on the package at the time.
    """

    def __init__(self, device: str = "cpu", powercap: str | Path = "/sys/class/powercap") -> None:
        self.reason: str | None = None
        self.source = ""
        self._read: Callable[[], float] | None = None
        if device == "cuda":
            self._nvml()
        else:
            self._rapl(Path(powercap))

    def _rapl(self, root: Path) -> None:
        domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        files = [(d / "energy_uj", d / "max_energy_range_uj") for d in domains]
        readable = []
        for f, m in files:
            try:
                readable.append((f, int(f.read_text()), int(m.read_text()) if m.exists() else 0))
            except (OSError, ValueError):
                continue
        if not readable:
            self.reason = (f"no readable powercap/RAPL energy counter on this host ({root}/intel-rapl:*/energy_uj "
                           + ("absent)" if not files else "not readable)"))
            return
        self.source = f"RAPL package energy ({len(readable)} domain(s), {root})"
        last = {f: v for f, v, _ in readable}
        total = [0.0]

        def read() -> float:
            for f, _, wrap in readable:
                v = int(f.read_text())
                d = v - last[f]
                total[0] += d if d >= 0 else d + wrap
                last[f] = v
            return total[0] / 1e6

        self._read = read

    def _nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            import torch

            handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        except Exception as e:  # no NVML or no energy counter: recorded as the reason
            self.reason = f"no NVML energy counter ({type(e).__name__}: {e})"[:200]
            return
        self.source = "NVML total energy of the GPU"
        self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3

    def read(self) -> float | None:
        """Joules since an arbitrary origin, or None without a counter."""
        return self._read() if self._read else None


#: A timed decode is stalled when its wall time is over this multiple of its side's fastest ...
STALL_WALL = 2.0
#: ... while its CPU time grew less than this share as much (the process was stopped, not busy).
STALL_WORK_SHARE = 0.5


def stalled_decodes(walls: Sequence[float], cpus: Sequence[float]) -> list[bool]:
    """Which decodes of one side (cell or fp32) a suspension stretched.

    Every decode of a side does the same work (one fixed batch, greedy, the same tokens),
    so its CPU time barely moves while its wall time follows the host.  A decode whose
    wall time is over :data:`STALL_WALL` times the side's fastest while its CPU time grew
    less than :data:`STALL_WORK_SHARE` as much was not computing for most of it: the
    process was stopped (``SIGSTOP``, a SLURM suspend or preemption, a debugger) or its
    threads were descheduled by a burst that the pairing cannot cancel.  Measured on this
    project: one such decode took 2,754 s instead of 3 and put two of six pairs at 0.001x.
    A load that slows the decode while its OpenMP threads spin (CPU time rising with the
    wall) is not a stall: both halves of a pair see it.
    """
    if len(walls) != len(cpus):
        raise ValueError("stalled_decodes needs one CPU time per wall time")
    if not walls:
        return []
    fast_wall = min(walls)
    fast_cpu = max(min(cpus), 1e-9)
    out = []
    for wall, cpu in zip(walls, cpus, strict=True):
        stretch = wall / fast_wall if fast_wall > 0 else 1.0
        out.append(stretch > STALL_WALL and (cpu / fast_cpu) < STALL_WORK_SHARE * stretch)
    return out


def paired_timing(decode_cell: Decode, decode_ref: Decode, batch: Sequence[Any], settings: TimingSettings, *,
                  cores: int, same_model: bool = False, energy: EnergyMeter | None = None,
                  on_pair: Callable[[int], None] | None = None) -> dict:
    """Time ``decode_cell`` against ``decode_ref`` on ``batch`` by the paired protocol (module docstring).

    ``same_model``: the cell is the reference itself (the fp32 cell): the alternation decodes
    the same model throughout; its speedup is 1 by definition and its interval shows the
    protocol's own noise on this host (the estimate from those self-ratios is kept as
    ``self_ratio``); it stops at ``min_pairs``, since no row's estimate depends on it.
    ``cores``: cores the job holds, for core-seconds.  ``on_pair(k)``: called after each pair with the
    number of pairs decoded so far, voided ones included (a progress bar).  Returns the record's timing keys.

    A pair one of whose decodes stalled (:func:`stalled_decodes`) is voided: it is kept in
    ``voided_pairs`` with its ratio, counts towards neither the estimate nor ``max_pairs``,
    and its stalled time towards neither ``max_s`` nor the cost per audio hour.  A job
    that cannot get ``min_pairs`` unstalled pairs within ``3 x max_pairs`` pairs fails:
    it has no speed to report.
    """
    if not batch:
        raise ValueError("paired timing needs a non-empty timing batch")
    audio = float(sum(u.duration for u in batch))
    metered = energy is not None and energy.read() is not None

    def timed(decode: Decode, walls: list[float], cpus: list[float], joules: list[float] | None = None) -> None:
        e0 = energy.read() if metered and joules is not None else None
        wall, cpu = decode(batch)
        if joules is not None:  # the cell's energy only: the record reports the cell's cost
            joules.append(energy.read() - e0 if e0 is not None else 0.0)
        walls.append(wall)
        cpus.append(cpu)

    def unstalled(values: list[float], stalled: list[bool]) -> list[float]:
        return [v for v, s in zip(values, stalled, strict=True) if not s]

    decode_cell(batch)  # warm-up, untimed (first-call allocations, kernel selection)
    if not same_model:
        decode_ref(batch)
    cells, cell_cpus, cell_j = [], [], []
    refs, ref_cpus = [], []
    timed(decode_cell, cells, cell_cpus, cell_j)
    max_pairs = settings.min_pairs if same_model else max(settings.min_pairs, settings.max_pairs)
    all_ratios: list[float] = []  # every pair's, voided ones included
    t_start = time.perf_counter()
    stop = ""
    while not stop:
        timed(decode_ref, refs, ref_cpus)
        timed(decode_cell, cells, cell_cpus, cell_j)
        all_ratios.append(refs[-1] / ((cells[-2] + cells[-1]) / 2))
        stalled_cell, stalled_ref = stalled_decodes(cells, cell_cpus), stalled_decodes(refs, ref_cpus)
        valid = [k for k in range(len(refs)) if not (stalled_ref[k] or stalled_cell[k] or stalled_cell[k + 1])]
        ratios = [all_ratios[k] for k in valid]
        n = len(ratios)
        if on_pair:
            on_pair(len(refs))
        stalled_s = sum(w for w, s in zip(cells + refs, stalled_cell + stalled_ref, strict=True) if s)
        if n < settings.min_pairs:
            if len(refs) >= 3 * max_pairs:
                raise RuntimeError(
                    f"paired timing: only {n} of {len(refs)} pairs free of stalled decodes (this process was "
                    f"stopped or starved for {stalled_s:.0f} s); fewer than min_pairs ({settings.min_pairs}), "
                    "so this cell has no speed to report: rerun it on a host that does not suspend it")
            continue
        speedup, s_lo, s_hi = paired_speedup(ratios)
        halfwidth = (s_hi - s_lo) / 2 / speedup if math.isfinite(s_lo) else math.inf
        if halfwidth <= settings.target_halfwidth:
            stop = f"interval within ±{100 * halfwidth:.1f} % of the estimate after {n} pairs"
        elif n >= max_pairs and same_model:
            stop = f"min_pairs ({max_pairs}) reached (the fp32 cell against itself), interval ±{100 * halfwidth:.1f} %"
        elif n >= max_pairs:
            stop = f"max_pairs ({max_pairs}) reached, interval ±{100 * halfwidth:.1f} %"
        elif time.perf_counter() - t_start - stalled_s >= settings.max_s:
            stop = f"max_s ({settings.max_s:g} s) reached after {n} pairs, interval ±{100 * halfwidth:.1f} %"
    voided = [k for k in range(len(refs)) if k not in valid]
    if voided:
        stop += (f"; {len(voided)} pair(s) voided: a decode stalled (wall over {STALL_WALL:g}x its side's fastest, "
                 "CPU time not)")
    ok_cells, ok_refs = unstalled(cells, stalled_cell), unstalled(refs, stalled_ref)
    cell_cpu, joules = sum(unstalled(cell_cpus, stalled_cell)), sum(unstalled(cell_j, stalled_cell))
    cell_rtfx = [audio / w for w in ok_cells]
    ref_rtfx = [audio / w for w in ok_refs]
    cell_wall, cell_audio = float(sum(ok_cells)), audio * len(ok_cells)
    rtfx, r_lo, r_hi = median_interval(cell_rtfx)
    ref, ref_lo, ref_hi = median_interval(ref_rtfx)
    hour = 3600.0 / cell_audio
    out = {
        "timing_protocol": (f"paired against fp32 in the same job: one fixed batch of {len(batch)} unit(s) "
                            f"({audio:.1f} s), cell and fp32 decoding it in strict alternation after one untimed "
                            "warm-up each; pair k = fp32's k-th decode over the mean of the cell's decodes around "
                            "it; a pair with a stalled decode is voided; Hodges-Lehmann estimate of the pairs' "
                            "log ratios, Wilcoxon signed-rank 95 % interval"),
        "timing_settings": asdict(settings),
        "pairs": n,
        "pair_ratios": [round(r, 5) for r in ratios],
        "voided_pairs": [{"pair": k, "ratio": round(all_ratios[k], 5)} for k in voided],
        # the raw decodes behind the pairs (cell: one more than pairs), so a reader sees which side moved
        "cell_walls": [round(w, 4) for w in cells],
        "ref_walls": [round(w, 4) for w in refs],
        "cell_cpu_s": [round(c, 4) for c in cell_cpus],
        "ref_cpu_s": [round(c, 4) for c in ref_cpus],
        "timing_stop": stop,
        "timing_s": round(time.perf_counter() - t_start, 3),
        "speedup_vs_fp32": round(speedup, 4),
        "speedup_low": round(s_lo, 4),
        "speedup_high": round(s_hi, 4),
        "rtfx": round(rtfx, 3), "rtfx_low": round(r_lo, 3), "rtfx_high": round(r_hi, 3),
        "fp32_rtfx": round(ref, 3), "fp32_rtfx_low": round(ref_lo, 3), "fp32_rtfx_high": round(ref_hi, 3),
        "rtf": round(cell_wall / cell_audio, 5),
        "timed_wall_s": round(cell_wall, 4),
        "timed_audio_s": round(cell_audio, 3),
        "core_s_per_audio_h": round(cell_wall * cores * hour, 1),
        "cpu_s_per_audio_h": round(cell_cpu * hour, 1),
        "cores": int(cores),
    }
    if same_model:
        # fp32 against itself: its speedup is 1 by definition; the interval (and the estimate, kept as
        # `self_ratio`) is the protocol's own noise on this host, which every other row's interval includes
        out.update(speedup_vs_fp32=1.0, self_ratio=round(speedup, 4))
    if metered:
        out.update(energy_j_per_audio_h=round(joules * hour, 1), energy_source=energy.source)
    else:
        out.update(energy_j_per_audio_h=None,
                   energy_reason=energy.reason if energy is not None else "energy not metered")
    return out
