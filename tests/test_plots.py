"""Every report figure is written as non-empty PNG and SVG, also when there is nothing to plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from whisperquant.report.plots import plot_clean_vs_noisy, plot_size_vs_wer, plot_speed_vs_wer, plot_wer_vs_bits

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
                    row.update(
                        wer=wer,
                        wer_ci_low=wer * 0.8,
                        wer_ci_high=wer * 1.2,
                        artifact_bytes=size,
                        compression_pct=100 * (1 - size / fp32_bytes),
                        rtf=rtf,
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
        synthetic_summary().assign(status="failed", wer=np.nan, rtf=np.nan),
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
