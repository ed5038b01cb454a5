"""Incremental reruns: a config change plans exactly the jobs whose outputs depend on it.

The session's finished small run (tiny.en, two clips, fp32 + PyTorch dynamic
int8; conftest.py) is copied once; each test writes a
changed config into the copy and counts the jobs of a dry run.  The rule
``publish_report`` and ``all`` (the default target) are planned whenever ``aggregate`` is.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from workflow_utils import copy_run, planned_job_details, planned_jobs, small_config, write_config

pytestmark = pytest.mark.slow

DYN = "torch-dynamic-int8"
CELL_JOBS = {"quantize": 1, "transcribe": 1, "score": 1, "aggregate": 1, "publish_report": 1, "all": 1}


@pytest.fixture(scope="module")
def base_config(default_config, download_cache) -> dict:
    return small_config(default_config, download_cache)


@pytest.fixture(scope="module")
def work(tmp_path_factory, finished_run) -> Path:
    return copy_run(finished_run, tmp_path_factory.mktemp("incremental") / "run")


@pytest.fixture
def cfg(work, base_config):
    """A fresh copy of the config to change; the finished run's config is restored afterwards."""
    yield copy.deepcopy(base_config)
    write_config(work, base_config)


def _resolved(cfg: dict) -> dict[str, dict]:
    from whisperquant.config import check_config, validate_schema

    c = copy.deepcopy(cfg)
    validate_schema(c)
    return check_config(c)


def _counts(jobs) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs:
        out[j.rule] = out.get(j.rule, 0) + 1
    return out


def test_unchanged_config_plans_nothing(work):
    assert planned_jobs(work) == {}


def test_changed_scheme_parameter_reruns_only_that_cell(work, cfg):
    cfg["schemes"][DYN]["granularity"] = "per_channel"
    write_config(work, cfg)
    jobs = planned_job_details(work)
    assert _counts(jobs) == CELL_JOBS, jobs
    assert {j.wildcards["scheme"] for j in jobs if "scheme" in j.wildcards} == {DYN}
    (quantize,) = [j for j in jobs if j.rule == "quantize"]
    assert quantize.reason.startswith("Params have changed") and "per_channel" in quantize.reason
    assert planned_jobs(work) == CELL_JOBS  # what the summary table of a dry run says, too


def test_added_scheme_adds_only_its_jobs(work, cfg):
    cfg["schemes"]["torch-dynamic-int8-pc"] = {"library": "pytorch", "mode": "dynamic", "granularity": "per_channel"}
    write_config(work, cfg)
    jobs = planned_job_details(work)
    assert _counts(jobs) == CELL_JOBS, jobs
    assert {j.wildcards["scheme"] for j in jobs if "scheme" in j.wildcards} == {"torch-dynamic-int8-pc"}
    assert all(j.reason.startswith("Missing output files") for j in jobs if j.rule == "quantize")


def test_report_setting_reruns_only_the_aggregation(work, cfg):
    cfg["report"]["bootstrap_resamples"] = 300
    write_config(work, cfg)
    assert planned_jobs(work) == {"aggregate": 1, "publish_report": 1, "all": 1}


def test_settings_no_output_depends_on_plan_nothing(work, cfg, tmp_path):
    """Spelled-out defaults, cache location, cluster resources, another device's settings, unused calibration,
    temporary artifacts."""
    link = tmp_path / "same-cache"
    link.symlink_to(cfg["downloads"], target_is_directory=True)
    cfg["downloads"] = str(link)  # the same artifacts, found elsewhere
    cfg["models"]["tiny.en"]["mem_mb"] = 1600  # a cluster resource
    cfg["resources_per_rule"] = {"runtime_minutes": 30}
    cfg["transcription"]["cuda_compile"] = True  # the grid runs on CPU only
    cfg["calibration"]["utterances"] = 3  # no scheme of the grid calibrates
    cfg["artifacts"] = "temp"  # whether artifacts are deleted once used: the records and the report stay
    cfg["schemes"][DYN] = _resolved(cfg)[DYN]  # every parameter spelled out, the backend's defaults included
    cfg["schemes"]["static-int8"] = {"library": "pytorch", "mode": "static"}  # defined, not in the grid
    cfg["grid"]["schemes"] = ["fp32", DYN]
    write_config(work, cfg)
    jobs = planned_job_details(work)
    assert jobs == [], "\n".join(f"{j.rule} {j.wildcards}: {j.reason}" for j in jobs)


def test_re_timing_cells_of_a_finished_run_is_forcerun_of_their_transcripts(finished_run, tmp_path):
    """README "Speed": to re-time a cell (on a quieter machine, say) force its transcript.  Deleting the
    transcript alone plans nothing, by Snakemake's rule for intermediate files (a missing one is remade
    only for a job that must run): the README says so, and this test keeps both halves true."""
    work = copy_run(finished_run, tmp_path / "run")
    transcript = Path("results/transcripts/tiny.en") / DYN / "cpu" / "clean.jsonl"
    (work / transcript).unlink()
    (work / transcript.with_name("clean.timing.json")).unlink()
    assert planned_jobs(work) == {}
    retime = {"transcribe": 1, "score": 1, "aggregate": 1, "publish_report": 1, "all": 1}
    assert planned_jobs(work, "--forcerun", str(transcript)) == retime
    fp32 = Path("results/transcripts/tiny.en/fp32/cpu/clean.jsonl")
    assert planned_jobs(work, "--forcerun", str(transcript), str(fp32)) == {**retime, "transcribe": 2, "score": 2}
