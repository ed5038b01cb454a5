"""Report figures: what each one draws (points, front lines, axes, legend), read off the
matplotlib Figure, and that every figure is written as PNG and SVG, also with nothing to plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from whisperquant.evaluate.stats import pareto_frontier
from whisperquant.report.plots import (
    clean_vs_noisy_figure,
    plot_clean_vs_noisy,
    plot_size_vs_wer,
    plot_speed_vs_wer,
    plot_wer_vs_bits,
    size_vs_wer_figure,
    speed_vs_wer_figure,
    wer_vs_bits_figure,
)

SCHEMES = [
    ("fp32", "fp32", np.nan),
    ("dynamic-int8", "pytorch", 8),
    ("int8wo", "torchao", 8),
    ("int4wo-g64", "torchao", 4),
    ("quanto-w8", "quanto", 8),
    ("quanto-w4", "quanto", 4),
    ("hqq-4bit", "hqq", 4),
    ("hqq-2bit", "hqq", 2),
    ("bnb-nf4", "bnb", 4),
    ("bnb-fp4", "bnb", 4),
]


def synthetic_summary(seed: int = 0) -> pd.DataFrame:
    """40 rows: 2 models x 2 corpora x 10 schemes, with unsupported/failed cells and two devices."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, fp32_bytes, wer0 in (("tiny", 151e6, 0.055), ("base", 290e6, 0.042)):
        for corpus, noise in (("clean", 1.0), ("noisy", 2.5)):
            for scheme, lib, bits in SCHEMES:
                row = {
                    "model": model,
                    "scheme": scheme,
                    "library": lib,
                    "method": scheme,
                    "bits": bits,
                    "device": "cuda" if lib == "bnb" else "cpu",
                    "corpus": corpus,
                    "status": "ok",
                    "reason": "",
                }
                if scheme == "bnb-fp4":
                    row.update(status="unsupported", reason="needs CUDA")
                elif scheme == "hqq-2bit" and model == "base":
                    row.update(status="failed", reason="RuntimeError: boom")
                else:
                    b = 32 if np.isnan(bits) else bits
                    wer = wer0 * noise * (1 + (8 / b) ** 2 * 0.05 + rng.random() * 0.1)
                    size = fp32_bytes * (0.2 + 0.8 * b / 32)
                    rtf = 0.1 + rng.random() * 0.3
                    rtfx = 1 / rtf
                    row.update(
                        wer=wer,
                        wer_ci_low=wer * 0.8,
                        wer_ci_high=wer * 1.2,
                        artifact_bytes=size,
                        compression_pct=100 * (1 - size / fp32_bytes),
                        rtf=rtf,
                        rtfx=rtfx,
                        rtfx_low=rtfx * 0.9,
                        rtfx_high=rtfx * 1.1,
                        speedup_vs_fp32=rtfx / 5,
                        speedup_low=rtfx / 5 * 0.97,
                        speedup_high=rtfx / 5 * 1.03,
                        host="amd-epyc-2c-abc123",
                        delta_wer=wer - wer0 * noise,
                        on_pareto_front=False,
                    )
                rows.append(row)
    df = pd.DataFrame(rows)
    assert len(df) == 40
    return df


def _check(paths, tmp_path, name):
    paths = [p for p in paths]
    assert sorted(p.name for p in paths) == [f"{name}.png", f"{name}.svg"]
    png, svg = sorted(paths, key=lambda p: p.suffix)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    text = svg.read_text()
    assert "<svg" in text and svg.stat().st_size > 2000
    assert png.parent == tmp_path


def _all_plots(df, tmp_path):
    return {
        "size_vs_wer": plot_size_vs_wer(df, tmp_path / "size_vs_wer"),
        "wer_vs_bits": plot_wer_vs_bits(df, tmp_path / "wer_vs_bits"),
        "clean_vs_noisy": plot_clean_vs_noisy(df, tmp_path / "clean_vs_noisy", "clean", "noisy"),
        "speed_vs_wer": plot_speed_vs_wer(df, tmp_path / "speed_vs_wer"),
    }


def test_plots_on_synthetic_summary(tmp_path):
    for name, paths in _all_plots(synthetic_summary(), tmp_path).items():
        _check(paths, tmp_path, name)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame(),
        synthetic_summary().iloc[:0],
        synthetic_summary().assign(status="failed", wer=np.nan, rtf=np.nan, rtfx=np.nan),
    ],
    ids=["no-columns", "no-rows", "all-failed"],
)
def test_plots_on_empty_data(tmp_path, frame):
    for name, paths in _all_plots(frame, tmp_path).items():
        _check(paths, tmp_path, name)


def test_plots_without_interval_columns_and_with_suffix(tmp_path):
    df = synthetic_summary().drop(columns=["wer_ci_low", "wer_ci_high"])
    paths = plot_size_vs_wer(df, tmp_path / "fig.png")  # a suffix on the stem is tolerated
    _check(paths, tmp_path, "fig")
    # a corpus pair that is not in the data gives the "no data" figure, not an error
    _check(plot_clean_vs_noisy(df, tmp_path / "cvn", "clean", "other"), tmp_path, "cvn")


def test_svg_is_reproducible(tmp_path):
    df = synthetic_summary()
    a = plot_wer_vs_bits(df, tmp_path / "a")[1].read_bytes()
    b = plot_wer_vs_bits(df, tmp_path / "b")[1].read_bytes()
    assert a == b


# --------------------------------------------------------------------------- what is drawn


def _lines(ax, prefix: str) -> list:
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


def _points(ax) -> list[tuple[float, float]]:
    """Every (x, y) drawn as a data point on ``ax``."""
    return sorted(
        (float(x), float(y))
        for line in _lines(ax, "_points:")
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    )


def _same(got: list[tuple[float, float]], want_x, want_y) -> None:
    want = sorted(zip(np.asarray(want_x, float), np.asarray(want_y, float), strict=True))
    assert len(got) == len(want)
    np.testing.assert_allclose(np.array(got, float), np.array(want, float))


def _legend(fig) -> list[str]:
    assert len(fig.legends) == 1
    return [t.get_text() for t in fig.legends[0].get_texts()]


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & df["wer"].notna()]


def test_size_vs_wer_draws_every_ok_cell_and_the_front():
    df = synthetic_summary()
    fig = size_vs_wer_figure(df)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["clean", "noisy"]
    for ax in axes:
        want = _ok(df[df["corpus"] == ax.get_title()])
        assert len(want) == 17  # 20 cells, fp4 unsupported twice, one failed
        _same(_points(ax), want["artifact_bytes"] / 1e6, want["wer"] * 100)
        assert ax.get_xlabel().startswith("Artifact size (MB") and ax.get_ylabel().startswith("WER (%")
        for model in ("base", "tiny"):
            (front,) = _lines(ax, f"_pareto-front:{model}")
            g = want[want["model"] == model]
            mask = pareto_frontier(g["artifact_bytes"].to_numpy(), g["wer"].to_numpy())
            expected = g[mask].sort_values("artifact_bytes")
            assert 2 <= mask.sum() < len(g)
            np.testing.assert_allclose(front.get_xdata(), expected["artifact_bytes"] / 1e6)
            np.testing.assert_allclose(front.get_ydata(), expected["wer"] * 100)
        assert not _lines(ax, "_wer-cap")  # nothing above 50 %
    legend = _legend(fig)
    assert legend == ["fp32", "pytorch", "torchao", "quanto", "hqq", "bnb", "base", "tiny",
                      "Pareto front (base)", "Pareto front (tiny)"]


def test_size_vs_wer_keeps_unusable_cells_off_the_front():
    df = synthetic_summary()
    junk = df[(df["model"] == "tiny") & (df["corpus"] == "clean") & (df["scheme"] == "hqq-2bit")].index
    df.loc[junk, ["wer", "wer_ci_low", "wer_ci_high", "artifact_bytes"]] = [0.9, 0.85, 0.95, 1e6]  # smallest
    fig = size_vs_wer_figure(df, max_wer=0.5)
    ax = next(ax for ax in fig.axes if ax.get_title() == "clean")
    assert (1.0, 90.0) in _points(ax)  # drawn ...
    (front,) = _lines(ax, "_pareto-front:tiny")
    assert 1.0 not in set(front.get_xdata()) and max(front.get_ydata()) <= 50  # ... but not on the front
    (cap,) = _lines(ax, "_wer-cap")
    assert list(cap.get_ydata()) == [50, 50]
    assert "WER 50 %: above = not on the front" in _legend(fig)
    # without a limit the junk cell is the smallest point, so it is on the front
    (front,) = _lines(next(a for a in size_vs_wer_figure(df, max_wer=None).axes if a.get_title() == "clean"),
                      "_pareto-front:tiny")
    assert front.get_xdata()[0] == 1.0


def test_size_vs_wer_draws_one_device_per_cell():
    df = synthetic_summary()
    dup = _ok(df[df["library"] == "quanto"]).assign(device="cuda", wer=0.3)
    both = pd.concat([df, dup], ignore_index=True)
    ax = size_vs_wer_figure(both).axes[0]
    assert len(_points(ax)) == 17 and 30.0 not in {y for _, y in _points(ax)}  # the cpu rows
    ax = size_vs_wer_figure(both, device="cuda").axes[0]
    ys = [y for _, y in _points(ax)]
    assert len(ys) == 6 and ys.count(30.0) == 4  # 2 quanto schemes x 2 models, + the 2 bnb-nf4 cells


def test_wer_vs_bits_draws_points_and_baselines():
    df = synthetic_summary()
    fig = wer_vs_bits_figure(df)
    for ax in fig.axes[:2]:
        want = _ok(df[df["corpus"] == ax.get_title()])
        assert sorted(y for _, y in _points(ax)) == pytest.approx(sorted(want["wer"] * 100))
        assert len(_lines(ax, "_baseline:")) == 2  # one fp32 line per model
        assert ax.get_xlabel().startswith("Weight bit-width") and ax.get_ylabel().startswith("WER (%")
        assert {x for x, _ in _points(ax) if x == 32} == {32.0}  # fp32 at 32 bits
    assert _legend(fig)[-1] == "fp32 baseline"


def test_wer_vs_bits_with_a_corpus_of_fp32_rows_only():
    """A user's extra corpus run on the baseline alone: its panel has the fp32 line and no points."""
    df = synthetic_summary()
    extra = _ok(df[(df["corpus"] == "clean") & (df["library"] == "fp32")]).assign(corpus="mine")
    fig = wer_vs_bits_figure(pd.concat([df, extra], ignore_index=True))
    ax = next(a for a in fig.axes if a.get_title() == "mine")
    assert len(_lines(ax, "_baseline:")) == 2 and sorted(y for _, y in _points(ax)) == \
        pytest.approx(sorted(extra["wer"] * 100))


def test_clean_vs_noisy_pairs_the_corpora():
    df = synthetic_summary()
    fig = clean_vs_noisy_figure(df, "clean", "noisy")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["base", "tiny"]
    for ax in fig.axes[:2]:
        ok = _ok(df[df["model"] == ax.get_title()])
        pair = ok[ok.corpus == "clean"].merge(ok[ok.corpus == "noisy"], on="scheme", suffixes=("_c", "_n"))
        assert len(pair) in (8, 9)
        _same(_points(ax), pair["wer_c"] * 100, pair["wer_n"] * 100)
        assert len(_lines(ax, "_diagonal")) == 1
        assert ax.get_xlabel().startswith("WER on clean") and ax.get_ylabel().startswith("WER on noisy")
    assert _legend(fig)[-1] == "y = x (equal WER)"


def test_speed_vs_wer_one_panel_per_device_and_corpus():
    """The speed axis is the paired speedup over fp32 (not an absolute RTFx that drifts with the host)."""
    df = synthetic_summary()
    fig = speed_vs_wer_figure(df)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["clean — cpu", "clean — cuda", "noisy — cpu", "noisy — cuda"]
    for ax in fig.axes:
        corpus, dev = ax.get_title().split(" — ")
        want = _ok(df[(df["corpus"] == corpus) & (df["device"] == dev)])
        assert len(want) in (2, 15, 16)
        _same(_points(ax), want["wer"] * 100, want["speedup_vs_fp32"])
        assert "speedup over fp32" in ax.get_ylabel() and "higher is faster" in ax.get_ylabel()
    assert "host amd-epyc-2c-abc123" in fig._suptitle.get_text()
    # rows from two hosts: each panel and label says which
    two = df.assign(host=["amd-epyc-2c-abc123" if i % 2 else "xeon-2c-def456" for i in range(len(df))])
    fig = speed_vs_wer_figure(two)
    assert "2 hosts" in fig._suptitle.get_text()
    assert any("hosts)" in ax.get_title() for ax in fig.axes)
    # records without a speedup (written before paired timing) are not plotted
    assert not _points(speed_vs_wer_figure(df.drop(columns=["speedup_vs_fp32"])).axes[0])


def test_no_data_figure_says_so():
    fig = size_vs_wer_figure(synthetic_summary().assign(status="failed"))
    (ax,) = fig.axes
    assert not _points(ax) and [t.get_text() for t in ax.texts] == ["no data"]
