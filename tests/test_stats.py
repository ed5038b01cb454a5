"""Statistics of the report: bootstrap intervals, paired tests, Pareto front, summary tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from whisperquant.evaluate.stats import PairedResult, bootstrap_wer_ci, paired_bootstrap_delta, pareto_frontier
from whisperquant.report.markdown import summary_markdown
from whisperquant.report.order import sort_summary
from whisperquant.report.statistics import STAT_COLUMNS, add_statistics, read_utt_scores

# --------------------------------------------------------------------------- bootstrap


def _corpus(rng: np.random.Generator, n: int = 200, p: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    words = rng.integers(5, 31, n)
    return rng.binomial(words, p), words


def test_bootstrap_ci_covers_true_wer():
    # Percentile bootstrap of a ratio of sums on 200 utterances covers ~94.4 % (measured on
    # 2000 runs); 1000 runs keep the binomial noise of the estimate (sd 0.7 %) well inside the
    # 93 % bar, where 200 runs (sd 1.6 %) would pass or fail on the choice of seed.
    rng = np.random.default_rng(20240601)
    runs, hits, widths = 1000, 0, []
    for i in range(runs):
        errors, words = _corpus(rng)
        lo, hi = bootstrap_wer_ci(errors, words, n_resamples=400, seed=i)
        hits += lo <= 0.1 <= hi
        widths.append(hi - lo)
    coverage = hits / runs
    assert coverage >= 0.93, coverage
    assert coverage <= 0.98, f"interval too wide to be useful: {coverage}"
    # ~3500 words at p = 0.1: sd of the corpus WER ~0.005, so a 95 % interval is ~0.02 wide
    assert 0.015 < float(np.mean(widths)) < 0.03


def test_bootstrap_ci_brackets_point_estimate_and_edge_cases():
    rng = np.random.default_rng(1)
    errors, words = _corpus(rng)
    wer = errors.sum() / words.sum()
    lo, hi = bootstrap_wer_ci(errors, words, n_resamples=500)
    assert lo < wer < hi
    assert all(np.isnan(bootstrap_wer_ci([], [])))
    assert all(np.isnan(bootstrap_wer_ci([1, 2], [0, 0])))
    assert bootstrap_wer_ci([0, 0, 0], [5, 6, 7]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_wer_ci([1, 2], [3])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_wer_ci([1], [3], confidence=1.5)
    with pytest.raises(ValueError, match="negative"):
        bootstrap_wer_ci([-1], [3])


def test_bootstrap_chunking_handles_large_corpora(monkeypatch):
    """Resamples are drawn in chunks; results must be finite and identical across calls."""
    import whisperquant.evaluate.stats as st

    monkeypatch.setattr(st, "_MAX_CHUNK_ELEMENTS", 1000)  # forces ~5 resamples per chunk
    rng = np.random.default_rng(3)
    errors, words = _corpus(rng)
    a = st.bootstrap_wer_ci(errors, words, n_resamples=97, seed=5)
    b = st.bootstrap_wer_ci(errors, words, n_resamples=97, seed=5)
    assert a == b and np.isfinite(a).all()


# --------------------------------------------------------------------------- paired test


def test_paired_bootstrap_finds_planted_difference():
    rng = np.random.default_rng(7)
    errors_a, words = _corpus(rng, n=200, p=0.08)
    subset = rng.random(words.size) < 0.5
    extra = np.where(subset, rng.binomial(words, 0.06), 0)  # ~ +3 WER points overall
    errors_b = errors_a + extra
    planted = extra.sum() / words.sum()
    assert 0.02 < planted < 0.04

    res = paired_bootstrap_delta(errors_b, errors_a, words, n_resamples=1000, seed=0)
    assert isinstance(res, PairedResult)
    assert res.delta == pytest.approx(planted)
    assert res.significant
    assert res.ci_low > 0 and res.ci_low < res.delta < res.ci_high
    assert res.p_value < 0.01
    # the other direction is the mirror image
    rev = paired_bootstrap_delta(errors_a, errors_b, words, n_resamples=1000, seed=0)
    assert rev.delta == pytest.approx(-res.delta)
    assert rev.significant and rev.ci_high < 0


def test_paired_bootstrap_small_noise_is_not_significant():
    rng = np.random.default_rng(11)
    errors_a, words = _corpus(rng)
    errors_b = errors_a.copy()
    flip = rng.choice(words.size, 6, replace=False)
    errors_b[flip[:3]] += 1
    errors_b[flip[3:]] = np.maximum(errors_b[flip[3:]] - 1, 0)
    res = paired_bootstrap_delta(errors_a, errors_b, words, n_resamples=1000)
    assert not res.significant
    assert res.ci_low <= 0 <= res.ci_high
    assert res.p_value > 0.05


def test_identical_systems_have_zero_delta():
    rng = np.random.default_rng(5)
    errors, words = _corpus(rng)
    res = paired_bootstrap_delta(errors, errors.copy(), words, n_resamples=300)
    assert res.delta == 0.0
    assert (res.ci_low, res.ci_high) == (0.0, 0.0)
    assert res.significant is False
    assert res.p_value == 1.0


def test_determinism():
    rng = np.random.default_rng(9)
    errors_a, words = _corpus(rng)
    errors_b = errors_a + rng.binomial(1, 0.2, words.size)
    assert bootstrap_wer_ci(errors_a, words, seed=4) == bootstrap_wer_ci(
        errors_a.copy(), words.copy(), seed=4
    )
    assert paired_bootstrap_delta(errors_a, errors_b, words, seed=4) == paired_bootstrap_delta(
        errors_a, errors_b, words, seed=4
    )
    assert bootstrap_wer_ci(errors_a, words, seed=4) != bootstrap_wer_ci(errors_a, words, seed=5)


# --------------------------------------------------------------------------- Pareto front


def test_pareto_frontier_hand_made():
    size = [100, 50, 50, 30, 30, 200, 10, np.nan, 40, 10]
    wer = [5.0, 6.0, 7.0, 9.0, 9.0, 5.0, np.nan, 1.0, 20.0, 30.0]
    # 100/5 front (smallest WER, 200/5 is bigger); 50/6 front, 50/7 dominated by 50/6 (same size);
    # 30/9 twice: duplicates stay; 200/5 dominated by 100/5; NaNs never; 40/20 dominated by 30/9;
    # 10/30 front (smallest size).
    expected = [True, True, False, True, True, False, False, False, False, True]
    assert pareto_frontier(size, wer).tolist() == expected
    assert pareto_frontier([], []).tolist() == []
    assert pareto_frontier([np.nan], [1.0]).tolist() == [False]
    assert pareto_frontier([1.0], [1.0]).tolist() == [True]


def test_pareto_frontier_matches_brute_force():
    rng = np.random.default_rng(2)
    size = rng.integers(0, 15, 300).astype(float)
    wer = rng.integers(0, 15, 300).astype(float)
    size[rng.random(300) < 0.05] = np.nan
    brute = []
    for i in range(300):
        if np.isnan(size[i]) or np.isnan(wer[i]):
            brute.append(False)
            continue
        le = (size <= size[i]) & (wer <= wer[i])
        lt = (size < size[i]) | (wer < wer[i])
        brute.append(not np.any(le & lt))
    assert pareto_frontier(size, wer).tolist() == brute


# --------------------------------------------------------------------------- summary tables


def _utt(ids, words, errors) -> pd.DataFrame:
    words, errors = np.asarray(words), np.asarray(errors)
    return pd.DataFrame(
        {
            "id": ids,
            "ref_words": words,
            "substitutions": errors,
            "deletions": 0,
            "insertions": 0,
            "hits": words - errors,
            "errors": errors,
        }
    )


def _row(scheme, library, bits, device, status="ok", size=None, utt=None, reason=""):
    row = {
        "model": "tiny",
        "scheme": scheme,
        "library": library,
        "method": scheme,
        "bits": bits,
        "device": device,
        "corpus": "clean",
        "status": status,
        "reason": reason,
    }
    if status == "ok":
        e, w = int(utt["errors"].sum()), int(utt["ref_words"].sum())
        row.update(
            n_utts=len(utt),
            ref_words=w,
            errors=e,
            wer=e / w,
            artifact_bytes=size,
            compression_pct=100 * (1 - size / 150e6),
            rtf=0.2,
            wall_s=2.0,
            audio_s=10.0,
        )
    return row


@pytest.fixture
def small_sweep():
    rng = np.random.default_rng(0)
    n = 150
    ids = [f"{i:04d}" for i in range(n)]
    words = rng.integers(5, 30, n)
    base = rng.binomial(words, 0.05)
    worse = base + rng.binomial(words, 0.05)  # +5 points: significant
    nf4 = base + rng.binomial(words, 0.01)
    utt = {
        ("tiny", "fp32", "cpu", "clean"): _utt(ids, words, base),
        ("tiny", "int8", "cpu", "clean"): _utt(ids, words, worse).sample(frac=1, random_state=1),  # shuffled
        ("tiny", "same", "cpu", "clean"): _utt(ids, words, base),
        ("tiny", "nf4", "cuda", "clean"): _utt(ids, words, nf4),
    }
    rows = [
        _row("int8", "pytorch", 8, "cpu", size=60e6, utt=utt[("tiny", "int8", "cpu", "clean")]),
        _row("fp4", "bnb", 4, "cpu", status="unsupported", reason="bitsandbytes fp4 needs CUDA"),
        _row("fp32", "fp32", np.nan, "cpu", size=150e6, utt=utt[("tiny", "fp32", "cpu", "clean")]),
        _row("same", "hqq", 8, "cpu", size=70e6, utt=utt[("tiny", "same", "cpu", "clean")]),
        _row("hqq1", "hqq", 1, "cpu", status="failed", reason="RuntimeError: boom\nline two"),
        _row("nf4", "bnb", 4, "cuda", size=40e6, utt=utt[("tiny", "nf4", "cuda", "clean")]),
    ]
    return pd.DataFrame(rows), utt, (ids, words, base, worse)


def test_add_statistics_columns_and_values(small_sweep):
    summary, utt, (_ids, words, base, worse) = small_sweep
    out = add_statistics(summary, utt, n_resamples=500, seed=0)
    assert list(out.columns[: len(summary.columns)]) == list(summary.columns)
    assert set(STAT_COLUMNS) <= set(out.columns)
    assert len(out) == len(summary)
    by = out.set_index("scheme")

    fp32 = by.loc["fp32"]
    assert fp32.delta_wer == 0.0 and fp32.delta_ci_low == 0.0 and fp32.delta_ci_high == 0.0
    assert pd.notna(fp32.delta_significant) and not bool(fp32.delta_significant)
    assert fp32.delta_p_value == 1.0
    assert fp32.wer_ci_low < fp32.wer < fp32.wer_ci_high

    # paired by id although the int8 table is shuffled
    expected = paired_bootstrap_delta(worse, base, words, n_resamples=500, seed=0)
    int8 = by.loc["int8"]
    assert int8.delta_wer == pytest.approx(expected.delta)
    assert (int8.delta_ci_low, int8.delta_ci_high) == pytest.approx((expected.ci_low, expected.ci_high))
    assert bool(int8.delta_significant) is True
    assert int8.delta_p_value < 0.05

    same = by.loc["same"]
    assert same.delta_wer == 0.0 and not bool(same.delta_significant)

    # QoI: share of utterances no worse than fp32 on the same utterance
    assert fp32.qoi_pct == 100.0 and same.qoi_pct == 100.0
    assert int8.qoi_pct == pytest.approx(100 * np.mean(worse <= base))
    assert 0 < int8.qoi_pct < 100  # "worse" adds errors to some utterances only

    for bad in ("fp4", "hqq1"):
        row = by.loc[bad]
        for col in (
            "wer_ci_low",
            "wer_ci_high",
            "delta_wer",
            "delta_ci_low",
            "delta_ci_high",
            "delta_p_value",
        ):
            assert np.isnan(row[col]), (bad, col)
        assert pd.isna(row["delta_significant"])
        assert not row["on_pareto_front"]

    # Pareto per (model, corpus, device): on cpu, int8 (60 MB) is the smallest and "same" (70 MB) has
    # the lowest WER; fp32 (150 MB, same WER as "same") is dominated.  The lone cuda row is its own front.
    assert by.loc["int8", "on_pareto_front"] and by.loc["same", "on_pareto_front"]
    assert not by.loc["fp32", "on_pareto_front"]
    assert by.loc["nf4", "on_pareto_front"]

    # deterministic
    again = add_statistics(summary, utt, n_resamples=500, seed=0)
    pd.testing.assert_frame_equal(out, again)


def test_cuda_cell_without_cuda_baseline_gets_nan_not_the_cpu_delta(small_sweep):
    summary, utt, (ids, words, base, _worse) = small_sweep
    out = add_statistics(summary, utt, n_resamples=200, seed=0).set_index("scheme")
    nf4 = out.loc["nf4"]
    assert nf4.device == "cuda"
    for col in ("delta_wer", "delta_ci_low", "delta_ci_high", "delta_p_value", "qoi_pct"):
        assert np.isnan(nf4[col]), col
    assert pd.isna(nf4.delta_significant)
    assert np.isfinite(nf4.wer_ci_low)  # its own interval is still there
    # with a cuda fp32 row of its own, the cuda cell is compared with that one
    cuda_base = base + (np.arange(len(ids)) % 7 == 0)  # cuda fp32 differs from the cpu one
    utt = {**utt, ("tiny", "fp32", "cuda", "clean"): _utt(ids, words, cuda_base)}
    rows = pd.concat([summary, pd.DataFrame([_row("fp32", "fp32", np.nan, "cuda", size=150e6,
                                                   utt=utt[("tiny", "fp32", "cuda", "clean")])])])
    out = add_statistics(rows.reset_index(drop=True), utt, n_resamples=200, seed=0)
    nf4 = out[out.scheme == "nf4"].iloc[0]
    nf4_errors = utt[("tiny", "nf4", "cuda", "clean")]["errors"].to_numpy()
    expected = paired_bootstrap_delta(nf4_errors, cuda_base, words, n_resamples=200, seed=0)
    assert nf4.delta_wer == pytest.approx(expected.delta)
    assert nf4.qoi_pct == pytest.approx(100 * np.mean(nf4_errors <= cuda_base))


def test_pareto_front_only_among_usable_cells(small_sweep):
    summary, utt, (ids, words, _base, _worse) = small_sweep
    # a tiny cell that gets almost everything wrong: smallest, so without the cap it is on the front
    bad = np.minimum(words, words // 2 + 3) + 1
    utt = {**utt, ("tiny", "junk", "cpu", "clean"): _utt(ids, words, bad)}
    rows = pd.concat([summary, pd.DataFrame([_row("junk", "hqq", 1, "cpu", size=10e6,
                                                   utt=utt[("tiny", "junk", "cpu", "clean")])])])
    rows = rows.reset_index(drop=True)
    assert rows.set_index("scheme").loc["junk", "wer"] > 0.5
    capped = add_statistics(rows, utt, n_resamples=50).set_index("scheme")
    assert not capped.loc["junk", "on_pareto_front"]
    assert capped.loc["int8", "on_pareto_front"] and capped.loc["same", "on_pareto_front"]
    uncapped = add_statistics(rows, utt, n_resamples=50, pareto_max_wer=None).set_index("scheme")
    assert uncapped.loc["junk", "on_pareto_front"]
    # the cap is inclusive: a cell exactly at it stays usable
    at = add_statistics(rows, utt, n_resamples=50, pareto_max_wer=float(capped.loc["junk", "wer"]))
    assert at.set_index("scheme").loc["junk", "on_pareto_front"]


def test_add_statistics_failed_baseline_gives_nan(small_sweep):
    summary, utt, _ = small_sweep
    summary = summary.copy()
    summary.loc[summary["scheme"] == "fp32", "status"] = "failed"
    out = add_statistics(summary, utt, n_resamples=100).set_index("scheme")
    assert np.isnan(out.loc["int8", "delta_wer"]) and pd.isna(out.loc["int8", "delta_significant"])
    assert np.isnan(out.loc["int8", "qoi_pct"])
    assert np.isfinite(out.loc["int8", "wer_ci_low"])


def test_add_statistics_rejects_mismatched_ids(small_sweep):
    summary, utt, _ = small_sweep
    utt = dict(utt)
    key = ("tiny", "int8", "cpu", "clean")
    utt[key] = utt[key].iloc[:-2]
    with pytest.raises(ValueError, match=r"scheme=int8.*scheme=fp32"):
        add_statistics(summary, utt, n_resamples=50)


def test_add_statistics_rejects_different_references(small_sweep):
    summary, utt, _ = small_sweep
    utt = dict(utt)
    key = ("tiny", "same", "cpu", "clean")
    changed = utt[key].copy()
    changed.loc[0, "ref_words"] += 1
    utt[key] = changed
    with pytest.raises(ValueError, match="reference word counts differ"):
        add_statistics(summary, utt, n_resamples=50)


def test_add_statistics_empty_frame():
    out = add_statistics(pd.DataFrame(columns=["model", "scheme", "library", "device", "corpus"]), {})
    assert out.empty and set(STAT_COLUMNS) <= set(out.columns)


def test_sort_order(small_sweep):
    summary, _, _ = small_sweep
    order = sort_summary(summary)["scheme"].tolist()
    # fp32, pytorch, hqq (8 before 1 bit), bnb (fp4 before nf4 by name)
    assert order == ["fp32", "int8", "same", "hqq1", "fp4", "nf4"]


def _md_rows(md: str) -> dict[str, dict[str, str]]:
    """The Markdown table(s) as {scheme: {header: cell}} (one table is enough for the tests)."""
    lines = md.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| scheme")).strip("|").split("|")]
    rows = {}
    for line in lines:
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == len(header), line
            rows[cells[0].split("`")[1]] = dict(zip(header, cells, strict=True))
    return rows


def test_summary_markdown(small_sweep):
    summary, utt, _ = small_sweep
    summary = summary.assign(
        compute_dtype=["int8", None, "float32", "float32", None, "bfloat16"],
        model_mem_mb=[61.0, np.nan, 151.2, 72.0, np.nan, 41.0],
        rtfx=[12.34, np.nan, 8.0, 9.0, np.nan, 150.0],
        rtfx_low=[11.0, np.nan, 7.5, 8.5, np.nan, np.nan],
        rtfx_high=[13.0, np.nan, 8.25, 9.5, np.nan, np.nan],
        empty_hyps=[2, np.nan, 0, 0, np.nan, 1],
        looping_hyps=[1, np.nan, 0, 0, np.nan, 0],
    )
    md = summary_markdown(add_statistics(summary, utt, n_resamples=300))
    assert md == summary_markdown(add_statistics(summary, utt, n_resamples=300))
    assert "## tiny — clean (150 utterances)" in md
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| scheme"))
    assert "device" in header  # two devices in the sweep
    assert "RTF |" not in header and "RTFx [95 % CI]" in header and "× fp32 [95 % CI]" in header
    legend = lines[lines.index(header) - 4]  # legend, blank, heading, blank, header
    for word in ("**compute**", "**mem**", "**QoI**", "**empty**", "**loop**", "**RTFx**", "**× fp32**",
                 "paired, interleaved timing", "WER ≤ 50 %"):
        assert word in legend, word
    rows = _md_rows(md)
    fp32, int8, nf4 = rows["fp32"], rows["int8"], rows["nf4"]
    assert (fp32["bits"], fp32["size MB"], fp32["ΔWER pp [95 % CI]"], fp32["QoI %"]) == ("32", "150.0", "baseline",
                                                                                        "100.0")
    assert (fp32["compute"], fp32["mem MB"], fp32["RTFx [95 % CI]"]) == ("float32", "151", "8.00 [7.50, 8.25]")
    assert int8["ΔWER pp [95 % CI]"].endswith("*")  # ΔWER column flagged
    assert (int8["size MB"], int8["compr. %"], int8["compute"], int8["mem MB"]) == ("60.0", "60.0", "int8", "61")
    assert (int8["empty"], int8["loop"], int8["RTFx [95 % CI]"]) == ("2", "1", "12.3 [11.0, 13.0]")
    assert 0 < float(int8["QoI %"]) < 100
    wer_cell = int8["WER % [95 % CI]"]
    assert wer_cell.count("[") == 1 and wer_cell.endswith("]")
    # no cuda fp32 row: no ΔWER and no QoI for the cuda cell; RTFx without a range
    assert (nf4["ΔWER pp [95 % CI]"], nf4["QoI %"], nf4["RTFx [95 % CI]"]) == ("–", "–", "150")
    assert "**unsupported** — bitsandbytes fp4 needs CUDA" in md
    assert "**failed** — RuntimeError: boom line two" in md
    assert md.index("`fp32`") < md.index("`int8`") < md.index("`same`") < md.index("`nf4`")
    assert "No cells" in summary_markdown(pd.DataFrame())


def test_read_utt_scores_keeps_string_ids(tmp_path):
    path = tmp_path / "scores.tsv"
    _utt(["0001", "0002"], [5, 6], [1, 0]).to_csv(path, sep="\t", index=False)
    df = read_utt_scores(path)
    assert df["id"].tolist() == ["0001", "0002"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tfoo\n1\t2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_utt_scores(bad)


def test_add_statistics_warns_on_missing_scores(small_sweep):
    summary, utt, _ = small_sweep
    utt = {k: v for k, v in utt.items() if k[1] != "same"}
    with pytest.warns(UserWarning, match="scheme=same"):
        out = add_statistics(summary, utt, n_resamples=50)
    assert np.isnan(out.set_index("scheme").loc["same", "wer_ci_low"])


# --------------------------------------------------------------------------- medians (speed)


def test_median_rank_is_the_binomial_order_statistic():
    from whisperquant.evaluate.stats import median_rank

    # fewer than 6 values: no 95 % interval of a median exists (2 / 2**5 = 6.25 % > 5 %)
    assert [median_rank(n) for n in range(1, 6)] == [0] * 5
    assert median_rank(6) == 1 and median_rank(8) == 1  # [x(1), x(n)]: 96.9 % and 99.2 % coverage
    assert median_rank(9) == 2  # [x(2), x(8)]: 1 - 2 * 10 / 512 = 96.1 %
    assert median_rank(16) == 4  # [x(4), x(13)]: 97.9 %; k = 5 would give 92.3 %
    with pytest.raises(ValueError):
        median_rank(6, confidence=1.0)


def test_median_interval_is_two_order_statistics_and_robust_to_one_outlier():
    from whisperquant.evaluate.stats import median_interval

    med, lo, hi = median_interval([1.02, 0.98, 1.00, 1.01, 0.99, 1.03, 0.97, 1.00, 9.0])
    assert med == 1.00 and (lo, hi) == (0.98, 1.03)  # the 9.0 stretches nothing
    med, lo, hi = median_interval([1.0, 1.1])
    assert med == pytest.approx(1.05) and np.isnan(lo) and np.isnan(hi)
    with pytest.raises(ValueError):
        median_interval([])


def test_signed_rank_critical_is_the_exact_wilcoxon_table():
    from itertools import product

    from whisperquant.evaluate.stats import signed_rank_critical

    # two-sided 5 % critical values T of the signed-rank test (any textbook table), c = T + 1
    table = {6: 0, 7: 2, 8: 3, 9: 5, 10: 8, 11: 10, 12: 13, 13: 17, 14: 21, 15: 25, 20: 52}
    assert {n: signed_rank_critical(n) - 1 for n in table} == table
    assert [signed_rank_critical(n) for n in range(1, 6)] == [0] * 5  # no 95 % interval from < 6 values
    # against brute force over every sign pattern, at another confidence
    for n in (5, 7, 9):
        sums = sorted(sum(r for r, s in zip(range(1, n + 1), signs, strict=True) if s)
                      for signs in product((0, 1), repeat=n))
        c = signed_rank_critical(n, confidence=0.8)
        assert sum(t <= c - 1 for t in sums) / 2**n <= 0.1 < sum(t <= c for t in sums) / 2**n


def test_hodges_lehmann_interval_and_paired_speedup():
    from whisperquant.evaluate.stats import hodges_lehmann_interval, paired_speedup

    est, lo, hi = hodges_lehmann_interval([1.02, 0.98, 1.00, 1.01, 0.99, 1.03, 0.97, 1.00, 9.0])
    assert est == pytest.approx(1.005) and lo == pytest.approx(0.985)  # one wild value barely moves the estimate
    est, lo, hi = hodges_lehmann_interval([1.0, 1.1])
    assert est == pytest.approx(1.05) and np.isnan(lo) and np.isnan(hi)
    with pytest.raises(ValueError):
        hodges_lehmann_interval([])
    ratios = [0.70, 0.72, 0.69, 0.71, 0.70, 0.73, 0.74, 0.68]
    s, lo, hi = paired_speedup(ratios)
    assert min(ratios) <= lo <= s <= hi <= max(ratios)
    inv = paired_speedup([1 / r for r in ratios])  # B over A is exactly the reciprocal of A over B
    assert inv == pytest.approx((1 / s, 1 / hi, 1 / lo))
    with pytest.raises(ValueError):
        paired_speedup([1.0, -1.0])


def test_hodges_lehmann_pins_a_drifting_paired_speedup_tighter_than_the_median():
    """The reason the timing protocol uses it: simulated decodes with 5 % noise each and a random-walk drift
    of the host's speed, alternated C R C R ... C as a job does; the estimate's spread over 2,000 jobs is
    smaller than the median's, and its interval still covers the true speedup about 95 % of the time."""
    from whisperquant.evaluate.stats import paired_speedup

    rng = np.random.default_rng(7)
    true, pairs, jobs = 0.7, 12, 2000
    decodes = (jobs, 2 * pairs + 1)
    log_speed = np.cumsum(rng.normal(0, 0.02, decodes), axis=1) + rng.normal(0, 0.05, decodes)
    walls = 2.5 * np.exp(log_speed)
    cell, ref = walls[:, 0::2] / true, walls[:, 1::2]
    ratios = ref / ((cell[:, :-1] + cell[:, 1:]) / 2)
    hl = np.array([paired_speedup(r) for r in ratios])
    med = np.log(np.median(ratios, axis=1))
    assert np.std(np.log(hl[:, 0])) < 0.93 * np.std(med)
    covered = np.mean((hl[:, 1] <= true) & (true <= hl[:, 2]))
    assert 0.9 <= covered <= 0.99


def test_ratio_of_locations_interval_chains_two_speedups():
    from whisperquant.evaluate.stats import paired_speedup, ratio_of_locations_interval

    cell = [1.50, 1.52, 1.49, 1.51, 1.50, 1.53]
    ct2 = [2.40, 2.38, 2.42, 2.41, 2.39, 2.40]
    r, lo, hi = ratio_of_locations_interval(cell, ct2, n_resamples=500, seed=1)
    assert r == pytest.approx(paired_speedup(cell)[0] / paired_speedup(ct2)[0])
    assert lo <= r <= hi and hi - lo < 0.03
    assert ratio_of_locations_interval(cell, ct2, n_resamples=500, seed=1) == (r, lo, hi)  # deterministic
    with pytest.raises(ValueError):
        ratio_of_locations_interval(cell, [0.0] * 6)
