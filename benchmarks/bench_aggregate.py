"""Time the report aggregation on a synthetic sweep of realistic size.

Builds a 200-cell summary (2 models x 2 corpora x 50 schemes, one device,
~100 utterances per cell) with per-utterance score TSVs in a temporary
directory, then times reading the TSVs, :func:`add_statistics`,
:func:`summary_markdown` and the four plots with ``time.perf_counter``.
Target: under 20 s in total on 2 cores.

    PYTHONPATH=workflow python benchmarks/bench_aggregate.py [--keep DIR] [--resamples N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from whisperquant.report.markdown import summary_markdown
from whisperquant.report.plots import (
    plot_clean_vs_noisy,
    plot_size_vs_wer,
    plot_speed_vs_wer,
    plot_wer_vs_bits,
)
from whisperquant.report.statistics import add_statistics, read_utt_scores

MODELS = {"whisper-tiny.en": (37.8e6, 0.055), "whisper-base.en": (72.6e6, 0.042)}
CORPORA = {"librispeech-clean": 1.0, "librispeech-noisy": 2.6}


def _schemes() -> list[tuple[str, str, float, int]]:
    """50 (scheme, library, bits, group) tuples spanning the libraries of the study."""
    out = [("fp32", "fp32", np.nan, 0), ("dynamic-int8", "pytorch", 8, 0)]
    for g in (32, 64, 128, 256):
        out += [(f"int4wo-g{g}", "torchao", 4, g)]
    out += [("int8wo", "torchao", 8, 0), ("int8dq", "torchao", 8, 0)]
    for b in (8, 4, 2):
        for g in (32, 64, 128):
            out.append((f"quanto-w{b}-g{g}", "quanto", b, g))
    for b in (8, 4, 3, 2, 1):
        for g in (16, 32, 64, 128, 256):
            out.append((f"hqq-{b}bit-g{g}", "hqq", b, g))
    out += [("bnb-int8", "bnb", 8, 0), ("bnb-nf4", "bnb", 4, 64), ("bnb-fp4", "bnb", 4, 64)]
    out += [(f"bnb-nf4-dq-g{g}", "bnb", 4, g) for g in (32, 128, 256)]
    out += [("hqq-4bit-g64-axis0", "hqq", 4, 64), ("torchao-int4-hqq", "torchao", 4, 128)]
    assert len(out) == 50, len(out)
    return out


def _penalty(bits: float, group: int) -> float:
    """Multiplicative WER penalty of a bit-width (synthetic but shaped like the literature)."""
    if np.isnan(bits) or bits >= 8:
        return 1.0
    base = {4: 1.08, 3: 1.6, 2: 6.0, 1: 25.0}[int(bits)]
    return 1.0 + (base - 1.0) * (1.0 + (group or 64) / 256)


def build(tmp: Path, n_utts: int = 100, seed: int = 1) -> tuple[pd.DataFrame, dict[tuple, Path]]:
    """Write the synthetic TSVs under ``tmp`` and return the summary and the TSV paths."""
    rng = np.random.default_rng(seed)
    rows, paths = [], {}
    schemes = _schemes()
    for model, (params, wer0) in MODELS.items():
        fp32_bytes = params * 4
        for corpus, noise in CORPORA.items():
            words = rng.integers(5, 40, n_utts)
            difficulty = rng.gamma(2.0, 0.5, n_utts)
            ids = [f"{corpus[:4]}-{i:04d}" for i in range(n_utts)]
            audio_s = float(words.sum()) / 2.7
            for k, (scheme, lib, bits, group) in enumerate(schemes):
                status, reason = "ok", ""
                if lib == "bnb" and "fp4" in scheme:
                    status, reason = "unsupported", "bitsandbytes fp4 needs a CUDA device"
                elif scheme == "hqq-1bit-g256" and model == "whisper-base.en":
                    status, reason = (
                        "failed",
                        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB | trace",
                    )
                row = {
                    "model": model,
                    "scheme": scheme,
                    "library": lib,
                    "method": scheme.split("-")[0],
                    "bits": bits,
                    "device": "cpu",
                    "corpus": corpus,
                    "status": status,
                    "reason": reason,
                }
                if status == "ok":
                    p = np.clip(wer0 * noise * _penalty(bits, group) * difficulty, 0, 0.95)
                    sub = rng.binomial(words, p * 0.7)
                    dele = rng.binomial(words - sub, p * 0.2)
                    ins = rng.poisson(p * 0.1 * words)
                    err = sub + dele + ins
                    empty = (rng.random(n_utts) < p * 0.05).astype(int)
                    looping = (rng.random(n_utts) < p * 0.1).astype(int)
                    utt = pd.DataFrame(
                        {
                            "id": ids,
                            "ref_words": words,
                            "substitutions": sub,
                            "deletions": dele,
                            "insertions": ins,
                            "hits": words - sub - dele,
                            "errors": err,
                            "empty": empty,
                            "looping": looping,
                        }
                    )
                    path = tmp / model / corpus / f"{scheme}.tsv"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    utt.to_csv(path, sep="\t", index=False)
                    paths[(model, scheme, "cpu", corpus)] = path
                    eff_bits = 32 if np.isnan(bits) else bits
                    size = fp32_bytes * (
                        0.25 + 0.75 * eff_bits / 32 * (1 + (32 / group if group else 0) / eff_bits)
                    )
                    wall = audio_s * (0.08 + 0.01 * (k % 7)) * (params / 37.8e6)
                    row.update(
                        n_utts=n_utts,
                        ref_words=int(words.sum()),
                        errors=int(err.sum()),
                        substitutions=int(sub.sum()),
                        deletions=int(dele.sum()),
                        insertions=int(ins.sum()),
                        wer=err.sum() / words.sum(),
                        artifact_bytes=round(size),
                        param_bytes=round(size * 0.98),
                        float_param_bytes=round(fp32_bytes * 0.25),
                        compression_pct=100 * (1 - size / fp32_bytes),
                        wall_s=wall,
                        audio_s=audio_s,
                        rtf=wall / audio_s,
                        rtfx=audio_s / wall,
                        rtfx_low=audio_s / wall * 0.9,
                        rtfx_high=audio_s / wall * 1.08,
                        timed_batches=4,
                        timing_pass="timed",
                        model_mem_mb=size / 1e6 * 1.1,
                        compute_dtype="float32",
                        insertion_rate=ins.sum() / words.sum(),
                        empty_hyps=int(empty.sum()),
                        looping_hyps=int(looping.sum()),
                        peak_rss_mb=300 + size / 1e6 * 1.5,
                    )
                rows.append(row)
    summary = pd.DataFrame(rows)
    csv = tmp / "summary.csv"
    summary.to_csv(csv, index=False)
    return pd.read_csv(csv), paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="write inputs and outputs here instead of a temp dir")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        tmp = args.keep or Path(td)
        tmp.mkdir(parents=True, exist_ok=True)
        summary, paths = build(tmp)
        print(f"{len(summary)} cells, {len(paths)} with scores, {args.resamples} resamples")
        timings: dict[str, float] = {}

        def timed(name, fn, *a, **kw):
            t0 = time.perf_counter()
            res = fn(*a, **kw)
            timings[name] = time.perf_counter() - t0
            return res

        utt = timed("read TSVs", lambda: {k: read_utt_scores(p) for k, p in paths.items()})
        stats = timed("add_statistics", add_statistics, summary, utt, n_resamples=args.resamples)
        md = timed("summary_markdown", summary_markdown, stats)
        (tmp / "summary.md").write_text(md)
        out = tmp / "plots"
        timed("plot_size_vs_wer", plot_size_vs_wer, stats, out / "size_vs_wer")
        timed("plot_wer_vs_bits", plot_wer_vs_bits, stats, out / "wer_vs_bits")
        timed(
            "plot_clean_vs_noisy",
            plot_clean_vs_noisy,
            stats,
            out / "clean_vs_noisy",
            "librispeech-clean",
            "librispeech-noisy",
        )
        timed("plot_speed_vs_wer", plot_speed_vs_wer, stats, out / "speed_vs_wer")
        for name, t in timings.items():
            print(f"{name:22s} {t:7.2f} s")
        total = sum(timings.values())
        print(f"{'total':22s} {total:7.2f} s  (target < 20 s)")


if __name__ == "__main__":
    main()
