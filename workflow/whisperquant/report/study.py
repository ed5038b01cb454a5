"""The study's published figures beside ours.

``data/study_reference.csv`` holds what is known of Söhler, Irigoyen and
Kirkedal (2025) -- Whisper-small on LibriSpeech -- with a confidence per
figure (several are second-hand readings of its tables).  :func:`compare`
joins them to our summary for the corpora that play the roles of test-clean
and test-other.

A number is only compared *numerically* (``comparable = numeric``, with
``ours - study`` in ``difference``) where the cells are the study's own:

* the model's config has ``source: hub`` and ``repo_id: openai/whisper-small``;
* for a figure on a test set, our corpus's config has ``source: librispeech``,
  the same ``split`` (``test-clean`` / ``test-other``) and no ``limit`` (a
  subset is another test set).  Size figures need the model only -- or its
  shapes: a ``source: random`` model of ``architecture: small`` has exactly
  Whisper-small's tensors, so its artifact sizes are the study's model's.

Everything else (the default embedded config: other models, other speech) is
``direction-only``: our value is shown, no difference is computed, and only
the direction and rough size of an effect mean something.  Without the
model/corpus specs nothing is numeric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from importlib import resources

import pandas as pd

#: The study's model, as a model config names it.
STUDY_MODEL = {"source": "hub", "repo_id": "openai/whisper-small"}
#: The study's test sets, as a corpus config names them.
STUDY_SPLITS = ("test-clean", "test-other")
NUMERIC, DIRECTION_ONLY = "numeric", "direction-only"
COLUMNS = ["model", "scheme", "study_corpus", "our_corpus", "metric", "comparable", "study", "confidence",
           "ours", "difference", "note"]

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


def is_study_model(spec: Mapping | None) -> bool:
    """Whether a model config is the study's Whisper-small from the Hugging Face Hub."""
    return bool(spec) and all(spec.get(k) == v for k, v in STUDY_MODEL.items())


def is_study_shapes(spec: Mapping | None) -> bool:
    """Whether a model config is a random-weight Whisper of the study's architecture (sizes only)."""
    return bool(spec) and spec.get("source") == "random" and spec.get("architecture") == "small" \
        and int(spec.get("vocab_size", 51865)) == 51865 and int(spec.get("num_mel_bins", 80)) == 80


def is_study_corpus(spec: Mapping | None, split: str) -> bool:
    """Whether a corpus config is the whole LibriSpeech ``split`` (no ``limit``)."""
    return (bool(spec) and spec.get("source") == "librispeech" and spec.get("split") == split
            and split in STUDY_SPLITS and spec.get("limit") is None)


def compare(summary: pd.DataFrame, clean_corpus: str | None, noisy_corpus: str | None,
            models: Mapping[str, Mapping] | None = None,
            corpora: Mapping[str, Mapping] | None = None) -> pd.DataFrame:
    """One row per (model, study figure): study value, confidence, ours, whether the two are
    comparable numerically, and ours - study where they are (NaN where ``direction-only``).

    ``models``/``corpora``: the config's ``models:`` and ``corpora:`` specs (see the module
    docstring for the rule); without them every row is direction-only.
    """
    corpus_map = {"test-clean": clean_corpus, "test-other": noisy_corpus, "": None}
    models, corpora = models or {}, corpora or {}
    rows = []
    for model in sorted(summary.model.unique()):
        for ref in reference().itertuples():
            corpus = corpus_map.get(ref.corpus)
            if ref.corpus and corpus is None:
                continue
            ours = _ours(summary, model, ref.scheme, corpus, ref.metric)
            spec = models.get(model)
            numeric = (is_study_model(spec) and (not ref.corpus or is_study_corpus(corpora.get(corpus), ref.corpus))
                       ) or (ref.metric == "compression_pct" and is_study_shapes(spec))
            diff = ours - float(ref.value) if numeric and not math.isnan(ours) else math.nan
            rows.append({
                "model": model, "scheme": ref.scheme, "study_corpus": ref.corpus or "(any)",
                "our_corpus": corpus or "(size/speed)", "metric": METRICS[ref.metric],
                "comparable": NUMERIC if numeric else DIRECTION_ONLY,
                "study": float(ref.value), "confidence": ref.confidence, "ours": ours,
                "difference": diff, "note": ref.note,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def comparison_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "_No cell of this run corresponds to a published figure of the study._\n"
    lines = ["`numeric`: the study's own model (openai/whisper-small from the Hub) and, for WER figures, the "
             "whole LibriSpeech test set, so ours − study is given. `direction-only`: another model or other "
             "speech; compare the direction and rough size of effects, not the numbers.", "",
             "| model | scheme | metric | study corpus → ours | comparable | study | confidence | ours | "
             "ours − study |",
             "|---|---|---|---|---|---:|---|---:|---:|"]
    for r in df.itertuples():
        ours = "–" if math.isnan(r.ours) else f"{r.ours:.2f}"
        if r.comparable != NUMERIC:
            diff = "(direction only)"
        else:
            diff = "–" if math.isnan(r.difference) else f"{r.difference:+.2f}"
        lines.append(f"| {r.model} | {r.scheme} | {r.metric} | {r.study_corpus} → {r.our_corpus} | "
                     f"{r.comparable} | {r.study:g} | {r.confidence} | {ours} | {diff} |")
    return "\n".join(lines) + "\n"
