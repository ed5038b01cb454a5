"""Artifacts and their records: the report never reads an artifact, a job never trusts a changed one.

Fast: the digests of :mod:`whisperquant.quantize.artifact`, and a transcription that
refuses a tampered artifact.  Slow (on copies of the session's finished small run and
of its second run, made with ``artifacts: temp``; conftest.py): a deleted artifact
leaves the report rebuildable, a failed aggregation leaves the previous report in
place, ``artifacts: temp`` ends with no artifact and a complete report.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from whisperquant.quantize import DEFAULT_TARGETS
from whisperquant.quantize.artifact import DIGESTS_KEY, file_digests, record_path, verify_artifact
from workflow_utils import copy_run, planned_jobs, snakemake


def _flip(path: Path, offset: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_file_digests_and_verify_artifact(tmp_path):
    art = tmp_path / "fp32"
    (art / "sub").mkdir(parents=True)
    (art / "model.safetensors").write_bytes(b"weights" * 100)
    (art / "sub" / "config.json").write_text("{}")
    (art / ".snakemake_timestamp").write_text("")  # Snakemake's stamp on a directory output: not the artifact's
    digests = file_digests(art)
    assert digests == {"model.safetensors": hashlib.sha256(b"weights" * 100).hexdigest(),
                       "sub/config.json": hashlib.sha256(b"{}").hexdigest()}
    record = {"status": "ok", DIGESTS_KEY: digests}
    verify_artifact(art, record)  # unchanged: accepted
    assert record_path(art) == tmp_path / "fp32.json"

    _flip(art / "model.safetensors", 17)
    with pytest.raises(ValueError, match=r"model\.safetensors: contents changed.*delete .*fp32") as e:
        verify_artifact(art, record)
    assert "sub/config.json" not in str(e.value)
    _flip(art / "model.safetensors", 17)
    verify_artifact(art, record)  # the byte put back: accepted again

    (art / "sub" / "config.json").unlink()
    (art / "stray.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"sub/config\.json: missing.*stray\.bin: extra file"):
        verify_artifact(art, record)
    with pytest.raises(ValueError, match="no file digests"):
        verify_artifact(art, {"status": "ok"})  # a record made before records carried digests
    shutil.rmtree(art)
    with pytest.raises(ValueError, match="artifact directory is missing"):
        verify_artifact(art, record)


def test_transcription_refuses_a_tampered_artifact(tiny_whisper_dir, tmp_path):
    from whisperquant.jobs import quantize_job, transcribe_job

    params = {"library": "fp32", "targets": DEFAULT_TARGETS}
    art = tmp_path / "quantized" / "m" / "fp32"
    quantize_job("m", tiny_whisper_dir, "fp32", params, art, None, None, tmp_path / "q.log")
    assert not (art / "cell.json").exists()  # the record is beside the artifact, not in it
    record = json.loads(record_path(art).read_text())
    assert record["status"] == "ok" and record[DIGESTS_KEY] == file_digests(art)
    assert "model.safetensors" in record[DIGESTS_KEY]

    _flip(art / "model.safetensors", (art / "model.safetensors").stat().st_size // 2)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"model\.safetensors: contents changed.*Refusing to use it: delete"):
        transcribe_job("m", tiny_whisper_dir, "fp32", params, art, "cpu", tmp_path / "manifest.tsv",
                       out / "t.jsonl", out / "t.timing.json", {"language": "en", "max_new_tokens": 8,
                                                                "batch_size": 1}, 1, tmp_path / "t.log", code="test")
    assert not out.exists()  # nothing written that could pass for a result


# --------------------------------------------------------------------------- the workflow


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A private copy of the session's finished small run."""
    return copy_run(finished_run, tmp_path / "run")


REPORT_JOBS = {"aggregate": 1, "publish_report": 1, "all": 1}


@pytest.mark.slow
def test_deleted_artifact_leaves_the_report_rebuildable(run):
    report = run / "results" / "report"
    before = (report / "summary.csv").read_bytes()
    shutil.rmtree(run / "results/quantized/tiny.en/torch-dynamic-int8")  # freeing disk
    assert planned_jobs(run) == {}  # nothing depends on the artifact any more
    assert planned_jobs(run, "--forcerun", "aggregate") == REPORT_JOBS
    assert snakemake(run, "--cores", "2", "--forcerun", "aggregate").returncode == 0
    assert (report / "summary.csv").read_bytes() == before  # the same rows, from the records
    assert (report / "plots" / "size_vs_wer.png").exists()
    assert not (run / "results" / ".report-staging").exists()  # the staged report was temporary


@pytest.mark.slow
def test_failed_aggregation_keeps_the_previous_report(run):
    report = run / "results" / "report"
    before = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert Path("summary.csv") in before and Path("plots/size_vs_wer.png") in before
    (run / "results/scores/tiny.en/torch-dynamic-int8/cpu/clean.json").write_text("{not json")  # corrupted
    assert planned_jobs(run) == REPORT_JOBS
    proc = snakemake(run, "--cores", "2", check=False)
    assert proc.returncode != 0 and "JSONDecodeError" in proc.stdout + proc.stderr
    after = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert after == before  # the previous report, untouched


@pytest.mark.slow
def test_temp_artifacts_end_with_records_and_a_complete_report(second_run, tmp_path):
    """The session's second run of the small config has ``artifacts: temp`` (a copy: the report is rebuilt)."""
    assert yaml.safe_load((second_run / "config" / "config.yaml").read_text())["artifacts"] == "temp"
    run = copy_run(second_run, tmp_path / "run")
    quantized = run / "results" / "quantized" / "tiny.en"
    assert sorted(p.name for p in quantized.iterdir()) == ["fp32.json", "torch-dynamic-int8.json"]  # no artifact
    summary = (run / "results" / "report" / "summary.csv").read_bytes()
    df = pd.read_csv(run / "results" / "report" / "summary.csv")
    assert set(df.scheme) == {"fp32", "torch-dynamic-int8"} and (df.status == "ok").all()
    assert df.artifact_bytes.notna().all() and df.wer.notna().all()
    assert planned_jobs(run) == {}  # the missing artifacts are temporary: nothing to redo
    snakemake(run, "--cores", "2", "--forcerun", "aggregate")  # and the report is rebuilt from the records
    assert (run / "results" / "report" / "summary.csv").read_bytes() == summary
