"""The cluster bootstrap: resampling speakers (with all their utterances) instead of utterances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_stats import _row, _utt
from whisperquant.config import ConfigError, check_config, validate_schema
from whisperquant.evaluate.stats import cluster_sums
from whisperquant.report.aggregate import read_speakers
from whisperquant.report.statistics import add_statistics
from workflow_utils import small_config


def test_cluster_sums_add_each_speakers_utterances():
    ids = ["u1", "u2", "u3", "u4"]
    spk = {"u1": "b", "u2": "a", "u3": "b", "u4": "a"}
    e, w = cluster_sums(ids, spk, [1, 2, 3, 4], [10, 20, 30, 40])
    assert e.tolist() == [6.0, 4.0] and w.tolist() == [60.0, 40.0]  # speakers a, b in sorted order
    with pytest.raises(ValueError, match=r"corpus x: utterance 'u5' has no speaker"):
        cluster_sums([*ids, "u5"], spk, [1] * 5, [1] * 5, where="corpus x: ")


def _summary(n_speakers: int, per_speaker: int):
    """fp32 and a scheme whose extra errors all fall on one speaker in four: correlated within speakers."""
    rng = np.random.default_rng(1)
    ids = [f"s{s:02d}-{u:02d}" for s in range(n_speakers) for u in range(per_speaker)]
    words = rng.integers(20, 40, size=len(ids))
    base = rng.integers(0, 3, size=len(ids))
    worse = base + np.array([3 if int(i[1:3]) % 4 == 0 else 0 for i in ids])
    utt = {("tiny", "fp32", "cpu", "clean"): _utt(ids, words, base),
           ("tiny", "q", "cpu", "clean"): _utt(ids, words, worse)}
    rows = [_row("fp32", "fp32", None, "cpu", size=150e6, utt=utt[("tiny", "fp32", "cpu", "clean")]),
            _row("q", "quanto", 8, "cpu", size=60e6, utt=utt[("tiny", "q", "cpu", "clean")])]
    speakers = {i: i.split("-")[0] for i in ids}
    return pd.DataFrame(rows), utt, speakers


def test_speakers_widen_the_intervals_when_errors_cluster():
    summary, utt, speakers = _summary(n_speakers=12, per_speaker=10)
    by_utt = add_statistics(summary, utt, n_resamples=2000, seed=0)
    by_spk = add_statistics(summary, utt, n_resamples=2000, seed=0, speakers={"clean": speakers})
    for df in (by_utt, by_spk):  # point estimates do not depend on what is resampled
        assert df.delta_wer.tolist() == by_utt.delta_wer.tolist() and df.wer.tolist() == by_utt.wer.tolist()
    q_utt, q_spk = by_utt.iloc[1], by_spk.iloc[1]
    assert (q_spk.delta_ci_high - q_spk.delta_ci_low) > 1.5 * (q_utt.delta_ci_high - q_utt.delta_ci_low)
    assert (q_spk.wer_ci_high - q_spk.wer_ci_low) > (q_utt.wer_ci_high - q_utt.wer_ci_low)
    assert q_spk.qoi_pct == q_utt.qoi_pct  # still a share of utterances


def test_one_speaker_per_utterance_is_the_utterance_bootstrap():
    summary, utt, _ = _summary(n_speakers=6, per_speaker=5)
    ids = utt[("tiny", "fp32", "cpu", "clean")]["id"]
    a = add_statistics(summary, utt, n_resamples=500, seed=3)
    b = add_statistics(summary, utt, n_resamples=500, seed=3, speakers={"clean": {i: i for i in ids}})
    pd.testing.assert_frame_equal(a, b)


def test_read_speakers_names_a_bad_line(tmp_path):
    p = tmp_path / "speakers.tsv"
    p.write_text("id\tspeaker\nu1\ta\nu2\n")
    with pytest.raises(ValueError, match=r"speakers\.tsv:3: expected an id and a speaker"):
        read_speakers(p)
    p.write_text("id\tspeaker\nu1\ta\n")
    assert read_speakers(p) == {"u1": "a"}


def test_the_embedded_corpus_cannot_be_bootstrapped_by_speaker(default_config, download_cache):
    cfg = small_config(default_config, download_cache)
    cfg["report"]["bootstrap_unit"] = "speaker"
    with pytest.raises(ConfigError, match=r"^report\.bootstrap_unit: speaker, but corpus 'clean' comes from"):
        check_config(validate_schema(cfg))
