"""Run the real workflow in a temporary directory (used by the end-to-end tests)."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TWO_CLIPS = ["librispeech-61-70968-0000", "librivox-0930"]


def worker_threads() -> int:
    """The threads one test worker's computations get: this machine's cores shared by the pytest-xdist workers.

    Every worker is busy at once, so two workers each running two OpenMP threads on two cores put four threads
    on two cores, and each parallel region waits at its barrier for a thread the other worker displaced.
    Measured on a 2-core AVX2 EPYC (2026-12-07), one tiny.en greedy decode beside one busy process: 1.26 s at
    one thread, 1.60 s at two (2.74 s against 1.94 s beside two).  Whatever the count, every comparison the
    suite makes is between computations at the same count; speed is not what it measures.
    """
    from whisperquant.evaluate.threads import available_cores

    return max(1, available_cores() // xdist_workers())


def package_env() -> dict[str, str]:
    """This process's environment with the checkout's ``workflow/`` first on ``PYTHONPATH``: a child Python
    (a fresh process reloading an artifact) imports the package under test, not another installed copy."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO / "workflow"), *filter(None, [os.environ.get("PYTHONPATH")])])}


def xdist_workers() -> int:
    """How many pytest-xdist workers run this session (1 for a serial run, ``-n 0``)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def small_config(default: dict, download_cache: Path, schemes: dict | None = None) -> dict:
    """tiny.en on two real clips (clean only), sharing the download cache."""
    cfg = copy.deepcopy(default)
    cfg["downloads"] = str(download_cache)
    cfg["models"] = {"tiny.en": cfg["models"]["tiny.en"]}
    cfg["corpora"] = {
        "clean": {"source": "embedded", "set": "eval", "ids": TWO_CLIPS},
        "calibration": {"source": "embedded", "set": "calibration", "limit": 2},
    }
    cfg["calibration"] = {"corpus": "calibration", "utterances": 2}
    cfg["schemes"] = schemes or {
        "fp32": {"library": "fp32"},
        "torch-dynamic-int8": {"library": "pytorch", "mode": "dynamic"},
    }
    cfg["grid"] = {"models": ["tiny.en"], "schemes": "all", "devices": ["cpu"], "corpora": ["clean"]}
    # the paired speed protocol at its minimum: one unit, one pair, no interval (tests check results, not
    # speed), and transcriptions not exclusive: a job at one thread does not hold both cores of a run
    cfg["transcription"] = {"batch_size": 2, "max_new_tokens": 64, "threads": worker_threads(), "exclusive": False,
                            "timing": {"units": 1, "min_pairs": 1, "max_pairs": 1}}
    cfg["report"] = {"bootstrap_resamples": 200, "seed": 0}
    return cfg


def cpu_refusals(config: dict) -> dict[str, str]:
    """The schemes whose CPU cells ``config`` plans as ``unsupported`` before any job runs, with the reason.

    A CUDA-only compute type anywhere; on an x86 CPU without VNNI also torch.ao static int8 with 8-bit
    activations.  Which CPU the suite lands on is not ours to choose, so the expectation is this machine's,
    as the workflow itself decides it (:func:`whisperquant.config.cells`).
    """
    from whisperquant.config import cells, check_config, validate_schema

    config = copy.deepcopy(config)
    validate_schema(config)
    _, unsupported = cells(config, check_config(config))
    return {c.scheme: reason for c, reason in unsupported.items() if c.device == "cpu"}


def write_config(workdir: Path, cfg: dict) -> Path:
    path = workdir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, timeout: int = 900, check: bool = True,
              repo: Path = REPO) -> subprocess.CompletedProcess:
    """``snakemake -s <repo>/Snakefile -d <workdir> ...`` in a subprocess (``repo``: this checkout, or a copy)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config" / "config.yaml"), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir: Path, *args: str, repo: Path = REPO) -> dict[str, int]:
    """Job counts per rule of a dry run (an empty dict when nothing is to be done).

    ``args`` (targets, options) go before ``--quiet rules``: that option takes a list
    of values and would swallow a target placed after it.
    """
    proc = snakemake(workdir, "-n", *args, "--quiet", "rules", repo=repo)
    return job_counts(proc.stdout + proc.stderr)


def job_counts(output: str) -> dict[str, int]:
    """The job counts per rule of the table a dry run prints (an empty dict when nothing is to be done)."""
    counts: dict[str, int] = {}
    started = False
    for line in output.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            started = True
            continue
        if started and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


@functools.cache
def paper_dry_run() -> subprocess.CompletedProcess:
    """``python -X importtime -m snakemake -n --configfile config/paper.yaml`` from the repository root, as
    users plan the study: made once per session, its job listing, job counts and import log serve the
    paper-config, device and registry tests."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--configfile",
                           "config/paper.yaml"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


# --- the session's shared runs (built in conftest.py), copies and dry-run details ---

#: decoder layer 0's Linears: a cheap target for HQQ schemes and the sensitivity analysis
DECODER_0 = r"^model\.decoder\.layers\.0\."
#: the runtimes' int8 schemes, by library, and a CUDA-only compute type (a CPU row with its reason, no job).
#: Their float32 schemes are not in the wide run: each would cost a quantize and a transcribe job to show
#: what test_engines' token-for-token test shows in-process with the same backend and decoding code.
RUNTIME_INT8 = {"ctranslate2": "ct2-int8", "onnxruntime": "ort-int8", "openvino": "ov-int8"}
RUNTIME_REFUSED = ["ct2-float16"]
_HQQ_D0 = {"library": "hqq", "group_size": 64, "targets": DECODER_0}
#: a sensitivity analysis and two mixed-precision schemes planned from its table
SENSITIVITY_SCHEMES = {
    # measured at 2 bits, the narrowest width both plans give a layer (config validation requires it)
    "hqq-2bit-d0": {**_HQQ_D0, "bits": 2},
    "hqq-keep3-d0": {**_HQQ_D0, "bits": 2, "mixed": {"sensitivity": "hqq-2bit-d0", "keep": 3, "keep_bits": 8}},
    # tiny.en is 151.1 MB in fp32, decoder layer 0's Linears 9.4 MB of it: between all-2 and all-8 bits
    "hqq-budget-d0": {**_HQQ_D0, "mixed": {"sensitivity": "hqq-2bit-d0", "budget_mb": 143.3, "choices": [2, 4, 8]}},
}
#: the calibrated scheme that also runs on the noisy corpus
CALIBRATED = "torch-static-int8-fo-rr"


def wide_config(default: dict, download_cache: Path) -> dict:
    """The small config widened to every kind of cell the end-to-end tests read, for one shared run.

    Clean corpus: every scheme of the default grid (all blocks), the runtimes' int8 schemes and CTranslate2's
    CUDA-only float16 (config/kinds.yaml's), and three HQQ schemes on decoder layer 0 (one of them the subject
    of a sensitivity analysis, two mixed-precision schemes planned from its table).  A noisy corpus derived
    from the clean one, with fp32 and a calibrated scheme.  One thread a job and no exclusive transcription (as
    in :func:`small_config`, so the finished run's cells are reused): results, not speed.
    """
    from whisperquant.config import scheme_names

    names = list(dict.fromkeys([*scheme_names(default), *RUNTIME_INT8.values(), *RUNTIME_REFUSED]))
    schemes = {n: default["schemes"][n] for n in names} | SENSITIVITY_SCHEMES
    cfg = small_config(default, download_cache, copy.deepcopy(schemes))
    cfg["corpora"]["noisy"] = {"source": "noisy", "from": "clean", "snr_db": 5, "seed": 1}
    cfg["grid"] = [cfg["grid"], {"models": ["tiny.en"], "schemes": ["fp32", CALIBRATED], "devices": ["cpu"],
                                 "corpora": ["noisy"]}]
    cfg["sensitivity"] = [{"model": "tiny.en", "scheme": "hqq-2bit-d0"}]
    cfg["calibration"]["sensitivity_utterances"] = 2
    cfg["transcription"]["threads"] = 1
    return cfg


#: The big write-once files of a run, hard-linked by :func:`copy_run` instead of copied: Snakemake deletes a
#: job's outputs before it runs the job, so a rerun in the copy replaces a linked file and never writes through
#: it into the source.  What tests edit in place (configs, scores, transcripts) is copied.
LINKED_IN_COPIES = ("results/quantized/", "results/graphs/", "resources/models/")


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a working directory (outputs, ``.snakemake`` metadata, mtimes): the copy plans what the source does.

    Artifacts and imported models are hard links (:data:`LINKED_IN_COPIES`; copied where the file system
    refuses a link): a copy of the wide run is 1.8 GB of them, copied a dozen times a session.
    """
    src = Path(src)

    def copy(source: str, target: str) -> str:
        if Path(source).relative_to(src).as_posix().startswith(LINKED_IN_COPIES):
            try:
                os.link(source, target)
                return target
            except OSError:
                pass
        return shutil.copy2(source, target)

    shutil.copytree(src, dst, symlinks=True, copy_function=copy)
    return dst


@dataclass(frozen=True)
class PlannedJob:
    rule: str
    wildcards: dict
    reason: str


def planned_job_details(workdir: Path, *args: str) -> list[PlannedJob]:
    """The jobs of a dry run, with their wildcards and Snakemake's reason for each."""
    proc = snakemake(workdir, "-n", *args)
    jobs: list[PlannedJob] = []
    rule, fields = None, {}

    def flush():
        if rule is not None:
            wc = dict(kv.split("=", 1) for kv in fields.get("wildcards", "").split(", ") if "=" in kv)
            jobs.append(PlannedJob(rule, wc, fields.get("reason", "")))

    for line in proc.stdout.splitlines():
        head = re.match(r"^(?:local)?rule (\w+):$", line)
        if head:
            flush()
            rule, fields = head.group(1), {}
        elif rule is not None and re.match(r"^    \w+: ", line):
            key, _, value = line.strip().partition(": ")
            fields[key] = value
        elif rule is not None and not line.startswith(" "):
            flush()
            rule, fields = None, {}
    flush()
    return jobs


def copy_repo(dst: Path, src: Path = REPO) -> Path:
    """A copy of the checkout's workflow (its code can be edited there), without runs, caches or the venv."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".snakemake", "results", "resources", "__pycache__", ".pytest_cache", ".ruff_cache"))
    return dst
