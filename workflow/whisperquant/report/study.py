"""The study's published figures beside ours.

``data/study_reference.csv`` holds what is known of Söhler, Irigoyen and
Kirkedal (2025) -- Whisper-small on LibriSpeech -- with a confidence per
figure (several are second-hand readings of its tables).  :func:`compare`
joins them to our summary for the corpora that play the roles of test-clean
and test-other and gives the difference.  With the default (embedded) config
the model and the speech differ from the study's, so only the direction and
rough size of effects are comparable; with ``config/paper.yaml`` the cells
are the study's own.
"""

from __future__ import annotations

import math
from importlib import resources

import pandas as pd

METRICS = {
    "wer_pct": "WER %",
    "delta_wer_pts": "ΔWER vs fp32 (points)",
    "delta_vs_dynamic_pts": "ΔWER vs PyTorch dynamic int8 (points)",
    "compression_pct": "size reduction vs fp32 %",
    "rtf": "CPU real-time factor",
}


def reference() -> pd.DataFrame:
    text = resources.files("whisperquant.report").joinpath("study_reference.csv").read_text(encoding="utf-8")
    from io import StringIO

    return pd.read_csv(StringIO(text), dtype={"corpus": str}, keep_default_na=False)


def _ours(summary: pd.DataFrame, model: str, scheme: str, corpus: str | None, metric: str) -> float:
    ok = summary[(summary.status == "ok") & (summary.model == model) & (summary.device == "cpu")]
    rows = ok[ok.scheme == scheme]
    if corpus:
        rows = rows[rows.corpus == corpus]
    if rows.empty:
        return math.nan
    r = rows.iloc[0]
    if metric == "wer_pct":
        return 100 * r.wer
    if metric == "delta_wer_pts":
        base = ok[(ok.library == "fp32") & (ok.corpus == corpus)]
        return 100 * (r.wer - base.iloc[0].wer) if len(base) else math.nan
    if metric == "delta_vs_dynamic_pts":
        dyn = ok[(ok.scheme == "torch-dynamic-int8") & (ok.corpus == corpus)]
        return 100 * (r.wer - dyn.iloc[0].wer) if len(dyn) else math.nan
    if metric == "compression_pct":
        return float(r.compression_pct)
    if metric == "rtf":
        return float(rows.rtf.mean())
    raise ValueError(f"unknown metric {metric!r}")


def compare(summary: pd.DataFrame, clean_corpus: str | None, noisy_corpus: str | None) -> pd.DataFrame:
    """One row per (model, study figure): study value, confidence, ours, ours - study."""
    corpus_map = {"test-clean": clean_corpus, "test-other": noisy_corpus, "": None}
    rows = []
    for model in sorted(summary.model.unique()):
        for ref in reference().itertuples():
            corpus = corpus_map.get(ref.corpus)
            if ref.corpus and corpus is None:
                continue
            ours = _ours(summary, model, ref.scheme, corpus, ref.metric)
            rows.append({
                "model": model, "scheme": ref.scheme, "study_corpus": ref.corpus or "(any)",
                "our_corpus": corpus or "(size/speed)", "metric": METRICS[ref.metric],
                "study": float(ref.value), "confidence": ref.confidence, "ours": ours,
                "difference": ours - float(ref.value) if not math.isnan(ours) else math.nan, "note": ref.note,
            })
    return pd.DataFrame(rows, columns=["model", "scheme", "study_corpus", "our_corpus", "metric", "study",
                                       "confidence", "ours", "difference", "note"])


def comparison_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_No cell of this run corresponds to a published figure of the study._\n"
    lines = ["| model | scheme | metric | study corpus → ours | study | confidence | ours | ours − study |",
             "|---|---|---|---|---:|---|---:|---:|"]
    for r in df.itertuples():
        ours = "–" if math.isnan(r.ours) else f"{r.ours:.2f}"
        diff = "–" if math.isnan(r.difference) else f"{r.difference:+.2f}"
        lines.append(f"| {r.model} | {r.scheme} | {r.metric} | {r.study_corpus} → {r.our_corpus} | {r.study:g} | "
                     f"{r.confidence} | {ours} | {diff} |")
    return "\n".join(lines) + "\n"
