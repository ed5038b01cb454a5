"""Determinism: two independent full runs of one config give byte-identical transcripts and scores.

Run A is the session's finished run of the small config (tiny.en, two clips,
fp32 + PyTorch dynamic int8); run B, the session's second run, starts from an
empty directory (only the download cache is shared) and deletes each artifact
once used (``artifacts: temp``, which changes no output): B's artifacts are
compared through the sha256 of every file that its records keep.  Timing
columns (wall time, real-time factors, peak memory) are the only things allowed
to differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from whisperquant.evaluate.speed import MEASURED_KEYS
from whisperquant.quantize.artifact import DIGESTS_KEY, file_digests, verify_artifact
from whisperquant.report.aggregate import MEASURED_COLUMNS

pytestmark = pytest.mark.slow

TIMING_KEYS = {"wall_s", "peak_rss_mb", "load_s", "quantize_s", "peak_gpu_mb", "model_mem_mb"} | MEASURED_KEYS


@pytest.fixture(scope="module")
def two_runs(finished_run, second_run) -> tuple[Path, Path]:
    return finished_run, second_run


def _files(root: Path, pattern: str) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.glob(pattern)) if p.is_file()}


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
    ra_files, rb_files = _files(a, "results/quantized/*/*.json"), _files(b, "results/quantized/*/*.json")
    assert len(ra_files) == 2 and sorted(ra_files) == sorted(rb_files)  # a record (<model>/<scheme>.json) a cell
    for name, path in ra_files.items():
        ra, rb = json.loads(path.read_text()), json.loads(rb_files[name].read_text())
        assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in rb.items() if k not in TIMING_KEYS}, name
        # the same digests, file by file, and they are A's artifact's bytes (B's was deleted after use)
        artifact = path.with_suffix("")
        assert ra[DIGESTS_KEY] and ra[DIGESTS_KEY] == file_digests(artifact), name
        verify_artifact(artifact, rb)
        assert not (b / name).with_suffix("").exists()
    for name, path in _files(a, "results/transcripts/**/*.timing.json").items():
        ra, rb = json.loads(path.read_text()), json.loads((b / name).read_text())
        assert {k: v for k, v in ra.items() if k not in TIMING_KEYS} == \
            {k: v for k, v in rb.items() if k not in TIMING_KEYS}, name
