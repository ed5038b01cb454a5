"""Determinism: two independent full runs of one config give byte-identical transcripts and scores.

Run A is the session's shared finished run of the small config (tiny.en, two
clips, fp32 + PyTorch dynamic int8); run B starts from an empty directory (only
the download cache is shared).  Timing columns (wall time, real-time factors,
peak memory) are the only things allowed to differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from whisperquant.evaluate.speed import MEASURED_KEYS
from whisperquant.report.aggregate import MEASURED_COLUMNS
from workflow_utils import finished_run, small_config, snakemake, write_config

pytestmark = pytest.mark.slow

TIMING_KEYS = {"wall_s", "peak_rss_mb", "load_s", "quantize_s", "peak_gpu_mb", "model_mem_mb"} | MEASURED_KEYS


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, default_config, download_cache) -> tuple[Path, Path]:
    cfg = small_config(default_config, download_cache)
    a = finished_run(tmp_path_factory, cfg)
    b = tmp_path_factory.mktemp("determinism-b")
    write_config(b, cfg)
    snakemake(b, "--cores", "2")
    return a, b


def _files(root: Path, pattern: str) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.glob(pattern)) if p.is_file()}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("pattern", ["results/transcripts/**/*.jsonl", "results/scores/**/*"])
def test_transcripts_and_scores_are_byte_identical(two_runs, pattern):
    a, b = two_runs
    fa, fb = _files(a, pattern), _files(b, pattern)
    assert fa and sorted(fa) == sorted(fb)
    assert len(fa) >= 2  # both cells (scores: a json and a tsv each)
    differ = [name for name in fa if fa[name].read_bytes() != fb[name].read_bytes()]
    assert not differ, differ


def test_summary_identical_but_for_timing(two_runs):
    a, b = (pd.read_csv(r / "results" / "report" / "summary.csv") for r in two_runs)
    assert list(a.columns) == list(b.columns)
    assert set(MEASURED_COLUMNS) & set(a.columns)
    keep = [c for c in a.columns if c not in MEASURED_COLUMNS]
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True)
    assert len(a) == 2 and (a.status == "ok").all()


def test_quantized_artifacts_and_timing_records_identical_but_for_timing(two_runs):
    a, b = two_runs
    qa, qb = _files(a, "results/quantized/**/*"), _files(b, "results/quantized/**/*")
    assert sorted(qa) == sorted(qb)
    for name, path in qa.items():
        if name.endswith(".snakemake_timestamp"):
            continue
        if path.parent.parent.name == "quantized":  # a record (<model>/<scheme>.json), beside its artifact
            ra, rb = json.loads(path.read_text()), json.loads(qb[name].read_text())
            assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == \
                {k: v for k, v in rb.items() if k not in TIMING_KEYS}, name
        else:
            assert _digest(path) == _digest(qb[name]), name
    for name, path in _files(a, "results/transcripts/**/*.timing.json").items():
        ra, rb = json.loads(path.read_text()), json.loads((b / name).read_text())
        assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in rb.items() if k not in TIMING_KEYS}, name
