"""The paired speed protocol (evaluate/speed.py): drift cancels in the ratio, decodes alternate strictly,
the stopping rule is honoured, the workload is fixed, the priority is raised and restored; and one real
pair of models on real audio.

The protocol's logic is tested with decode functions whose wall times are given (a host
that drifts by a factor of three, a burst of load on one decode): what is under test is
the arithmetic and the schedule, which a real clock would only blur.  The real-model test
runs tiny.en fp32 against PyTorch dynamic int8 on real clips and checks the record, not
the speed (speed targets live in benchmarks/).
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from whisperquant.evaluate.speed import (
    EnergyMeter,
    TimingSettings,
    paired_timing,
    stalled_decodes,
    timing_workload,
)


@dataclass(frozen=True)
class U:
    id: str
    duration: float


class DriftingHost:
    """Decodes whose wall time is work x the host's slowness at that call (it drifts with every call)."""

    def __init__(self, drift):
        self.drift, self.calls, self.log = drift, 0, []

    def decoder(self, name: str, work: float):
        def decode(batch):
            wall = work * sum(u.duration for u in batch) * self.drift(self.calls)
            self.calls += 1
            self.log.append(name)
            return wall, wall * 2
        return decode


BATCH = [U("a", 10.0)]


def test_drift_cancels_in_the_paired_ratio():
    # the host slows down threefold over the run; the cell does 1/1.5 of fp32's work
    host = DriftingHost(lambda k: 1.0 + 2.0 * k / 40)
    rec = paired_timing(host.decoder("cell", 1 / 1.5), host.decoder("ref", 1.0), BATCH,
                        TimingSettings(min_pairs=8, max_pairs=8), cores=2)
    # a linear drift cancels exactly: each fp32 decode is compared with the mean of the cell's on either side
    assert rec["speedup_vs_fp32"] == pytest.approx(1.5, rel=1e-9)
    assert rec["speedup_low"] == pytest.approx(1.5, rel=1e-9) and rec["speedup_high"] == pytest.approx(1.5, rel=1e-9)
    assert rec["pairs"] == 8 and len(rec["pair_ratios"]) == 8
    # absolute RTFx is the drifting host's: its interval spans the drift
    assert rec["rtfx_high"] / rec["rtfx_low"] > 1.5
    # cost per audio hour: wall x cores (core-seconds), the decode's own CPU seconds
    assert rec["core_s_per_audio_h"] == pytest.approx(rec["timed_wall_s"] * 2 * 3600 / rec["timed_audio_s"], rel=1e-3)
    assert rec["cpu_s_per_audio_h"] == pytest.approx(rec["core_s_per_audio_h"], rel=1e-3)


def test_strict_alternation_after_an_untimed_warmup():
    host = DriftingHost(lambda k: 1.0)
    rec = paired_timing(host.decoder("cell", 1.0), host.decoder("ref", 1.0), BATCH,
                        TimingSettings(min_pairs=4, max_pairs=4), cores=1)
    assert host.log[:2] == ["cell", "ref"]  # the warm-up of each
    assert host.log[2:] == ["cell", "ref"] * 4 + ["cell"]  # every decode follows the other model's
    assert rec["pairs"] == 4 and rec["speedup_vs_fp32"] == 1.0
    assert math.isnan(rec["speedup_low"])  # 4 pairs: too few for a 95 % interval of a median
    # one burst of load during a single decode moves one or two pairs, not the median
    burst = DriftingHost(lambda k: 4.0 if k == 7 else 1.0)
    rec = paired_timing(burst.decoder("cell", 0.5), burst.decoder("ref", 1.0), BATCH,
                        TimingSettings(min_pairs=9, max_pairs=9), cores=1)
    assert rec["speedup_vs_fp32"] == 2.0


def test_stops_once_the_interval_is_narrow_and_says_why():
    steady = DriftingHost(lambda k: 1.0)
    rec = paired_timing(steady.decoder("cell", 0.5), steady.decoder("ref", 1.0), BATCH,
                        TimingSettings(min_pairs=6, max_pairs=40, target_halfwidth=0.02), cores=1)
    assert rec["pairs"] == 6 and "interval within" in rec["timing_stop"]
    # a host whose every third call is disturbed: the interval stays wide, the run stops at max_pairs
    noisy = DriftingHost(lambda k: 3.0 if k % 3 == 0 else 1.0)
    rec = paired_timing(noisy.decoder("cell", 0.5), noisy.decoder("ref", 1.0), BATCH,
                        TimingSettings(min_pairs=6, max_pairs=9, target_halfwidth=0.02), cores=1)
    assert rec["pairs"] == 9 and rec["timing_stop"].startswith("max_pairs (9) reached")


def test_the_fp32_cell_is_its_own_reference():
    host = DriftingHost(lambda k: 1.0)
    decode = host.decoder("fp32", 1.0)
    rec = paired_timing(decode, decode, BATCH, TimingSettings(min_pairs=6, max_pairs=6), cores=1, same_model=True)
    assert host.log.count("fp32") == 1 + 13  # one warm-up, then 7 "cell" and 6 "reference" decodes
    assert rec["speedup_vs_fp32"] == rec["self_ratio"] == 1.0 and rec["speedup_low"] == rec["speedup_high"] == 1.0
    # on a real host the self-ratios scatter: the point stays 1 (the definition), the interval is the noise
    rng = random.Random(7)
    noise = [1.0 + 0.02 * rng.random() for _ in range(40)]  # a fixed, irregular jitter of up to 2 %
    jitter = DriftingHost(lambda k: noise[k])
    decode = jitter.decoder("fp32", 1.0)
    # no row's estimate depends on it, so it stops at min_pairs whatever max_pairs would allow a cell
    rec = paired_timing(decode, decode, BATCH, TimingSettings(min_pairs=6, max_pairs=12, target_halfwidth=0.001),
                        cores=1, same_model=True)
    assert rec["pairs"] == 6 and rec["timing_stop"].startswith("min_pairs (6) reached (the fp32 cell")
    assert rec["speedup_vs_fp32"] == 1.0 and rec["self_ratio"] != 1.0
    assert rec["speedup_low"] < 1.0 < rec["speedup_high"]


class StoppedHost(DriftingHost):
    """A host whose process is stopped during some decodes: their wall time grows, their CPU time does not."""

    def __init__(self, stopped: set[int], stop_s: float = 900.0):
        super().__init__(lambda k: 1.0)
        self.stopped, self.stop_s = stopped, stop_s

    def decoder(self, name: str, work: float):
        def decode(batch):
            cpu = work * 2
            wall = work + (self.stop_s if self.calls in self.stopped else 0.0)
            self.calls += 1
            self.log.append(name)
            return wall, cpu
        return decode


def test_a_stopped_decode_is_recognized_by_its_cpu_time():
    walls = [2.0, 2.1, 1.9, 900.0, 2.0]
    cpus = [3.6, 3.8, 3.5, 3.7, 3.6]
    assert stalled_decodes(walls, cpus) == [False, False, False, True, False]
    # a burst that slowed a decode while its threads kept working (CPU time rose with the wall) is no stall
    assert stalled_decodes([2.0, 6.0, 2.0], [3.6, 10.8, 3.6]) == [False, False, False]
    # nor a host that drifts by less than twofold
    assert stalled_decodes([2.0, 3.5, 2.4], [3.6, 3.6, 3.6]) == [False, False, False]
    assert stalled_decodes([], []) == []
    with pytest.raises(ValueError):
        stalled_decodes([1.0], [])


def test_a_pair_with_a_stopped_decode_is_voided_and_replaced():
    # call 0, 1: warm-ups; 2: the first timed cell decode; 3 + 2k: fp32's k-th decode; 4 + 2k: the cell's next.
    # Stop the process during fp32's 2nd decode (call 5) and the cell's decode after the 4th pair (call 10).
    host = StoppedHost({5, 10})
    rec = paired_timing(host.decoder("cell", 0.5), host.decoder("ref", 1.0), BATCH,
                        TimingSettings(min_pairs=6, max_pairs=6), cores=2)
    assert rec["speedup_vs_fp32"] == 2.0 and rec["speedup_low"] == rec["speedup_high"] == 2.0
    assert rec["pairs"] == 6 and rec["pair_ratios"] == [2.0] * 6
    # pair 1 holds the stopped fp32 decode; the stopped cell decode closes pair 3 and opens pair 4
    assert [v["pair"] for v in rec["voided_pairs"]] == [1, 3, 4]
    assert all(v["ratio"] != 2.0 for v in rec["voided_pairs"])
    assert len(rec["ref_walls"]) == 9 and len(rec["cell_walls"]) == 10
    assert "3 pair(s) voided" in rec["timing_stop"]
    # the stopped time is in no figure: RTFx and the cost per audio hour are those of the decodes that ran
    assert rec["rtfx_low"] == rec["rtfx_high"] == rec["rtfx"] == 20.0 and rec["fp32_rtfx"] == 10.0
    assert rec["timed_wall_s"] == pytest.approx(0.5 * 9)
    # without the voiding the same decodes gave a nonsense estimate (what a stopped job used to report)
    stopped_pairs = {1, 3, 4}
    raw = [r / ((c0 + c1) / 2) for r, c0, c1 in zip(rec["ref_walls"], rec["cell_walls"],
                                                   rec["cell_walls"][1:], strict=False)]
    assert min(raw) < 0.01 and max(raw) > 100 and {k for k, r in enumerate(raw) if r != 2.0} == stopped_pairs


def test_a_process_stopped_again_and_again_has_no_speed_to_report():
    host = StoppedHost(set(range(4, 200, 2)))  # every cell decode after the first timed one
    with pytest.raises(RuntimeError, match="free of stalled decodes"):
        paired_timing(host.decoder("cell", 0.5), host.decoder("ref", 1.0), BATCH,
                      TimingSettings(min_pairs=3, max_pairs=4), cores=1)


def test_workload_is_the_median_units_whatever_the_order():
    utts = [U(f"u{i:02d}", float(d)) for i, d in enumerate([5, 19, 12, 8, 15, 3, 11, 17])]
    a = timing_workload(utts, units=1)
    assert a == timing_workload(list(reversed(utts)), units=1)
    assert [u.duration for u in a] == [12.0]  # the upper median of 8
    assert [u.duration for u in timing_workload(utts, units=3)] == [11.0, 12.0, 15.0]
    assert len(timing_workload(utts[:3], units=8)) == 3  # never more than there are
    with pytest.raises(ValueError, match=r"transcription\.timing\.units"):
        timing_workload(utts, units=0)


def test_raised_priority_is_applied_to_every_thread_and_restored_or_says_why():
    import os
    import threading

    from whisperquant.evaluate.speed import RaisedPriority

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)  # a thread that exists before, like OpenMP's workers
    worker.start()
    try:
        before = {t: os.getpriority(os.PRIO_PROCESS, t) for t in RaisedPriority._tasks()}
        wanted = max(5, os.getpriority(os.PRIO_PROCESS, 0))  # raising nice needs no privilege
        with RaisedPriority(wanted) as p:
            inside = {t: os.getpriority(os.PRIO_PROCESS, t) for t in before}
        assert p.outcome == {"requested": wanted, "applied": wanted} and set(inside.values()) == {wanted}
        assert {t: os.getpriority(os.PRIO_PROCESS, t) for t in before} == before
        with RaisedPriority(None) as p:
            pass
        assert p.outcome["applied"] is None and p.outcome["reason"] == "not requested"
    finally:
        stop.set()
        worker.join()


def test_a_job_started_at_a_positive_nice_keeps_it():
    """`nice -n 10 snakemake ...`: the timing phase does not jump ahead of the user's other work, root or not."""
    code = ("import json, os; from whisperquant.evaluate.speed import RaisedPriority\n"
            "with RaisedPriority(-19) as p: inside = os.getpriority(os.PRIO_PROCESS, 0)\n"
            "print(json.dumps([p.outcome, inside]))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "workflow")}
    out = subprocess.run(["nice", "-n", "10", sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    outcome, inside = json.loads(out)
    started = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)  # nice adds to this process' own value
    assert inside == started and outcome["applied"] is None
    assert outcome["reason"] == f"not raised: the job was started at nice {started} (lowered by its user)"


def test_energy_meter_says_why_there_is_no_counter(tmp_path):
    meter = EnergyMeter("cpu", powercap=tmp_path / "absent")
    assert meter.read() is None and "no readable powercap/RAPL" in meter.reason
    rapl = tmp_path / "pc" / "intel-rapl:0"
    rapl.mkdir(parents=True)
    (rapl / "energy_uj").write_text("1000000\n")
    (rapl / "max_energy_range_uj").write_text("2000000\n")
    meter = EnergyMeter("cpu", powercap=tmp_path / "pc")
    assert meter.read() == 0.0 and meter.reason is None
    (rapl / "energy_uj").write_text("500000\n")  # wrapped around the 2 J range: +1.5 J
    assert meter.read() == pytest.approx(1.5)


@pytest.mark.slow
def test_real_models_on_real_audio(tiny_en, two_clip_corpus, tmp_path):
    """tiny.en PyTorch dynamic int8 against fp32, both real, on the fixed workload of two real clips."""
    import torch
    from transformers import WhisperProcessor
    from whisperquant.evaluate.transcribe import decode_batch, generate_kwargs_for, load_corpus
    from whisperquant.quantize import get_backend

    processor = WhisperProcessor.from_pretrained(str(tiny_en))
    fp32 = get_backend("fp32").load(tiny_en, {}, tiny_en, "cpu")
    int8 = torch.ao.quantization.quantize_dynamic(get_backend("fp32").load(tiny_en, {}, tiny_en, "cpu"),
                                                  {torch.nn.Linear}, dtype=torch.qint8)
    gen = generate_kwargs_for(fp32, "en", 32)

    def run(model):
        return lambda batch: decode_batch(model, processor, batch, gen)[1:]

    batch = timing_workload(load_corpus(two_clip_corpus), units=1)
    rec = paired_timing(run(int8), run(fp32), batch, TimingSettings(min_pairs=6, max_pairs=6), cores=2)
    assert rec["pairs"] == 6 and all(r > 0 for r in rec["pair_ratios"])
    assert rec["speedup_low"] <= rec["speedup_vs_fp32"] <= rec["speedup_high"]
    assert rec["rtfx"] > 0 and rec["fp32_rtfx"] > 0 and rec["timed_audio_s"] > 0
    assert rec["energy_j_per_audio_h"] is None or rec["energy_j_per_audio_h"] > 0

    # the same pairs with the process really stopped (SIGSTOP, 3 s) during fp32's third decode, as a
    # SLURM suspend or a debugger would: that pair (and only pairs with a stopped decode) is voided
    def stop_me(n):
        if n == 2:
            subprocess.Popen(["sh", "-c", f"sleep 0.05; kill -STOP {os.getpid()}; sleep 3; kill -CONT {os.getpid()}"])

    stopped = paired_timing(run(int8), run(fp32), batch, TimingSettings(min_pairs=3, max_pairs=3), cores=2,
                            on_pair=stop_me)
    assert [v["pair"] for v in stopped["voided_pairs"]] == [2] and stopped["voided_pairs"][0]["ratio"] > 3
    assert max(stopped["ref_walls"]) > 3 > max(stopped["cell_walls"])
    assert stopped["pairs"] == 3 and "1 pair(s) voided" in stopped["timing_stop"]
    assert abs(math.log(stopped["speedup_vs_fp32"] / rec["speedup_vs_fp32"])) < math.log(1.3)


# --------------------------------------------------------------------------- thread binding


def test_binding_only_where_the_job_holds_its_cores_and_never_over_the_users_choice():
    from whisperquant.evaluate.threads import available_cores, bind_openmp_threads

    cores = available_cores()
    env: dict = {}
    done = bind_openmp_threads(cores, holds_all_cores=True, environ=env)
    assert done["bound"] is True and env == {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}

    env = {}
    shared = bind_openmp_threads(1, holds_all_cores=False, environ=env)
    if cores > 1:  # fewer threads than cores, other jobs beside it: the OS places them
        assert shared["bound"] is False and "share" in shared["reason"] and env == {}

    env = {"OMP_PROC_BIND": "spread"}
    users = bind_openmp_threads(cores, holds_all_cores=True, environ=env)
    assert users["bound"] is None and "spread" in users["how"] and env == {"OMP_PROC_BIND": "spread"}


BOUND_PROBE = """
import os, sys
sys.path.insert(0, {pkg!r})
from whisperquant.evaluate.threads import available_cores, bind_openmp_threads
cores = available_cores()
done = bind_openmp_threads(cores, holds_all_cores=True)
import torch
torch.set_num_threads(cores)
torch.ones(4_000_000).add_(1)  # a parallel region: the OpenMP workers exist from here
masks = sorted(tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task"))
print(done["bound"], cores, available_cores(), len(os.sched_getaffinity(0)), "|", masks)
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="binding needs a Linux host with at least two cores")
def test_bound_threads_are_pinned_one_per_core_by_the_real_openmp_runtime():
    """torch's libgomp reads the variables when it loads: its threads end on distinct single cores."""
    pkg = str(Path(__file__).resolve().parents[1] / "workflow")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_PROC_BIND", "OMP_PLACES")}
    out = subprocess.run([sys.executable, "-c", BOUND_PROBE.format(pkg=pkg)], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    head, masks = out.split(" | ", 1)
    bound, before, after, main_thread = head.split()
    assert bound == "True"
    single = [m for m in eval(masks) if len(m) == 1]  # the main thread and the OpenMP worker(s)
    assert len({m[0] for m in single}) >= 2, masks
    # the main thread now runs on one core, but the job still holds (and computes on) all of them: that is
    # what its host record must say
    assert main_thread == "1" and after == before, out


def test_binding_after_torch_loaded_says_it_is_too_late():
    from whisperquant.evaluate.threads import bind_openmp_threads

    pytest.importorskip("torch")
    env_before = {k: os.environ.get(k) for k in ("OMP_PROC_BIND", "OMP_PLACES")}
    done = bind_openmp_threads(2, holds_all_cores=True)
    if env_before["OMP_PROC_BIND"] or env_before["OMP_PLACES"]:
        assert done["bound"] is None
    else:
        assert done["bound"] is False and "imported before" in done["reason"]
        assert os.environ.get("OMP_PROC_BIND") is None


# --------------------------------------------------------------------------- allocator regime

HEAP_PROBE = """
import ctypes, sys
sys.path.insert(0, {pkg!r})
from whisperquant.evaluate.memory import hold_freed_heap
held = hold_freed_heap() if {hold} else {{"held": False}}
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])  # minflt
def one_step():  # what a dequantising forward does: a few weight-sized buffers, written, freed
    blocks = [libc.malloc(8 << 20) for _ in range(3)]
    for b in blocks:
        libc.memset(b, 1, 8 << 20)
    for b in blocks:
        libc.free(b)
for _ in range(3):
    one_step()  # the first steps fault in any case: the heap grows once
f0 = faults()
for _ in range(10):
    one_step()
print(held["held"], faults() - f0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_held_heap_reuses_freed_pages_instead_of_faulting_in_fresh_ones():
    """Three 8 MiB buffers written and freed ten times (60 MiB of pages per step if they came fresh):
    with the thresholds held, no step after the first takes a page fault for them."""
    pkg = str(Path(__file__).resolve().parents[1] / "workflow")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def probe(hold: bool) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE.format(pkg=pkg, hold=hold)], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout.split()
        return out[0], int(out[1])

    held, held_faults = probe(True)
    _, default_faults = probe(False)
    assert held == "True"
    assert held_faults < 100, held_faults  # the loop's own stack and bookkeeping at most
    # glibc's default trims the heap's free top each step and faults the pages in again
    assert default_faults > 10 * 3 * (8 << 20) // 4096 // 2, default_faults


def test_users_allocator_settings_are_left_alone(monkeypatch):
    from whisperquant.evaluate.memory import hold_freed_heap

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    done = hold_freed_heap()
    assert done["held"] is None and "MALLOC_TRIM_THRESHOLD_" in done["how"]
