"""Speed a user can rank by: paired, interleaved timing of a cell against its fp32 reference.

Why paired.  A shared VM, a laptop or a cluster node drifts by ±20 % from minute to
minute, whole cells together, so two cells timed minutes apart cannot be compared
(measured on this project: the same nf4 cell 0.87x fp32 on clean speech and 1.24x on
noisy speech in one run).  More repeats inside a cell do not help; timing the
reference in the same process and the same seconds does.  So every transcription job,
after its accuracy pass, loads the fp32 model of the same model and device and
decodes a fixed timing workload with both, alternating (A B, B A, ...), and reports
the median of the per-pair wall-time ratios with a distribution-free 95 % interval.
Drift slower than one pair (a few seconds) cancels in each ratio; a competing load
slows both members of a pair alike.

The workload (:func:`timing_workload`) is the same for every scheme of a (model,
device, corpus): ``units`` scoring units at evenly spaced duration quantiles, in
batches of ``batch_size``, never the leftovers of the accuracy pass.  Pairs cycle
through the batches a whole round at a time; after ``min_pairs`` the job stops as
soon as the interval's half-width is within ``target_halfwidth`` of the median (or
at ``max_pairs`` / ``max_s``, saying so in ``timing_stop``).  The first decode of
each model is an untimed warm-up.

A timed decode is feature extraction + ``generate`` (CUDA synchronised), as in the
accuracy pass.  Absolute RTFx (audio seconds per wall second) is reported too, with
its own interval, but it is this host's at this minute: compare it only within one
host and one run.  Cost per audio hour: core-seconds (wall x cores the job holds),
CPU seconds (the process' own CPU time) and, where the host exposes counters, energy
(powercap/RAPL package energy on CPU, NVML on GPU); never estimated from a TDP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .stats import median_interval

#: Keys of a timing record that are this run's measurements (they differ between two runs of one config).
MEASURED_KEYS = frozenset({
    "pairs", "pair_ratios", "self_ratio", "timing_stop", "timing_s", "speedup_vs_fp32", "speedup_low", "speedup_high",
    "rtfx", "rtfx_low", "rtfx_high", "fp32_rtfx", "fp32_rtfx_low", "fp32_rtfx_high", "rtf", "timed_wall_s",
    "timed_audio_s",
    "core_s_per_audio_h", "cpu_s_per_audio_h", "gpu_s_per_audio_h", "energy_j_per_audio_h",
})

#: A decode of one batch: () -> (wall seconds, process CPU seconds).
Decode = Callable[[Sequence[Any]], tuple[float, float]]


@dataclass(frozen=True)
class TimingSettings:
    """``transcription.timing`` of the config (config/README.md)."""

    units: int = 2
    batch_size: int = 1
    min_pairs: int = 6
    max_pairs: int = 16
    target_halfwidth: float = 0.02
    max_s: float = 90.0

    @classmethod
    def from_config(cls, cfg: dict | None) -> TimingSettings:
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def timing_workload(utts: Sequence[Any], units: int, batch_size: int) -> list[list[Any]]:
    """The fixed timing batches of a corpus: ``units`` utterances at evenly spaced duration
    quantiles (ties by id), in batches of ``batch_size``, the same for every scheme.

    ``utts`` need ``id`` and ``duration``.  Evenly spaced quantiles, not the longest or the
    first: the workload resembles the corpus without depending on its order.
    """
    if units < 1 or batch_size < 1:
        raise ValueError(f"transcription.timing: units ({units}) and batch_size ({batch_size}) must be >= 1")
    ordered = sorted(utts, key=lambda u: (u.duration, u.id))
    n = min(units, len(ordered))
    picked = [ordered[min(len(ordered) - 1, int((i + 0.5) * len(ordered) / n))] for i in range(n)]
    return [picked[i : i + batch_size] for i in range(0, n, batch_size)]


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


def paired_timing(decode_cell: Decode, decode_ref: Decode, batches: Sequence[Sequence[Any]],
                  settings: TimingSettings, *, cores: int, same_model: bool = False,
                  energy: EnergyMeter | None = None, on_pair: Callable[[int], None] | None = None) -> dict:
    """Time ``decode_cell`` against ``decode_ref`` on ``batches`` by the paired protocol (module docstring).

    ``same_model``: the cell is the reference itself (the fp32 cell): its pairs decode the
    same model twice; its speedup is 1 by definition and its interval shows the protocol's
    own noise on this host (the median of those self-ratios is kept as ``self_ratio``).
    ``cores``: cores the job holds, for core-seconds.  Returns the record's timing keys.
    """
    if not batches:
        raise ValueError("paired timing needs at least one timing batch")
    n_batches = len(batches)
    max_pairs = max(settings.min_pairs, settings.max_pairs)
    max_pairs = math.ceil(max_pairs / n_batches) * n_batches  # whole rounds: every batch equally often
    audio = [float(sum(u.duration for u in b)) for b in batches]
    decode_cell(batches[0])  # warm-up, untimed (first-call allocations, kernel selection)
    if not same_model:
        decode_ref(batches[0])
    ratios: list[float] = []
    cell_rtfx: list[float] = []
    ref_rtfx: list[float] = []
    cell_wall = cell_cpu = cell_audio = 0.0
    joules = 0.0
    metered = energy is not None and energy.read() is not None
    t_start = time.perf_counter()
    stop = ""
    while True:
        k = len(ratios)
        b = k % n_batches
        first_ref = ((k // n_batches) + b) % 2 == 0  # A B, then B A: the order alternates within and across rounds
        walls = {}
        for who in (("ref", "cell") if first_ref else ("cell", "ref")):
            if who == "cell":
                e0 = energy.read() if metered else None
                walls["cell"], cpu = decode_cell(batches[b])
                if metered:
                    joules += energy.read() - e0
                cell_cpu += cpu
            else:
                walls["ref"], _ = decode_ref(batches[b])
        ratios.append(walls["ref"] / walls["cell"])
        cell_rtfx.append(audio[b] / walls["cell"])
        ref_rtfx.append(audio[b] / walls["ref"])
        cell_wall += walls["cell"]
        cell_audio += audio[b]
        if on_pair:
            on_pair(len(ratios))
        n = len(ratios)
        if n < settings.min_pairs or n % n_batches:
            continue
        med, lo, hi = median_interval(ratios)
        halfwidth = (hi - lo) / 2 / med if math.isfinite(lo) else math.inf
        if halfwidth <= settings.target_halfwidth:
            stop = f"interval within ±{100 * halfwidth:.1f} % of the median after {n} pairs"
        elif n >= max_pairs:
            stop = f"max_pairs ({max_pairs}) reached, interval ±{100 * halfwidth:.1f} %"
        elif time.perf_counter() - t_start >= settings.max_s:
            stop = f"max_s ({settings.max_s:g} s) reached after {n} pairs, interval ±{100 * halfwidth:.1f} %"
        if stop:
            break
    speedup, s_lo, s_hi = median_interval(ratios)
    rtfx, r_lo, r_hi = median_interval(cell_rtfx)
    ref, ref_lo, ref_hi = median_interval(ref_rtfx)
    hour = 3600.0 / cell_audio
    out = {
        "timing_protocol": (f"paired against fp32 in the same job: {len(batches)} fixed batch(es) of "
                            f"{settings.batch_size} unit(s), A B / B A alternating, one untimed warm-up decode "
                            f"per model; median of per-pair ratios, distribution-free 95 % interval"),
        "timing_settings": asdict(settings),
        "pairs": len(ratios),
        "pair_ratios": [round(r, 5) for r in ratios],
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
        # fp32 against itself: its speedup is 1 by definition; the interval (and the median, kept as
        # `self_ratio`) is the protocol's own noise on this host, which every other row's interval includes
        out.update(speedup_vs_fp32=1.0, self_ratio=round(speedup, 4))
    if metered:
        out.update(energy_j_per_audio_h=round(joules * hour, 1), energy_source=energy.source)
    else:
        out.update(energy_j_per_audio_h=None,
                   energy_reason=energy.reason if energy is not None else "energy not metered")
    return out
