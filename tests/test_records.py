"""The record types list every key a job writes: a record with a key its type lacks is refused where it is written."""

from __future__ import annotations

import json

import pytest
from whisperquant.records import QuantRecord, ScoreRecord, TimingRecord, undeclared_keys, write_record


def test_a_record_with_an_undeclared_key_is_refused_naming_it(tmp_path):
    out = tmp_path / "score.json"
    with pytest.raises(TypeError, match=r"key\(s\) \['wer_pct'\] that ScoreRecord"):
        write_record(out, ScoreRecord, {"status": "ok", "wer": 0.1, "wer_pct": 10.0})
    assert not out.exists()


def test_a_declared_record_is_written_as_json(tmp_path):
    out = write_record(tmp_path / "q.json", QuantRecord, {"status": "ok", "artifact_bytes": 3, "file_sha256": {}})
    assert json.loads(out.read_text()) == {"artifact_bytes": 3, "file_sha256": {}, "status": "ok"}


def test_the_timing_record_lists_the_accuracy_pass_and_the_paired_timing():
    assert undeclared_keys(TimingRecord, dict.fromkeys(
        ["utterances", "peak_rss_mb", "speedup_vs_fp32", "pair_ratios", "timing_units", "model_mem_mb", "host"])) == []
