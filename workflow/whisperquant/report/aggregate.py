"""Collect every cell into ``summary.csv`` (+ statistics, Markdown table and plots).

One row per model x scheme x device x corpus.  Unsupported cells (decided at
configuration time) and failed cells (recorded by their jobs) are rows too,
with their reason, so the grid's coverage is visible at a glance.

Keys a record may lack (records written by older code, or a backend that does
not report them) give empty cells (NaN), never an error.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..data.manifest import SPEAKERS, read_speakers
from ..evaluate.host import host_id, isa_label
from ..records import QuantRecord, ScoreRecord, TimingRecord, read_json, write_text

COLUMNS = [
    "model", "scheme", "library", "method", "bits", "compute_dtype", "device", "corpus", "status", "reason",
    "log", "n_utts", "ref_words", "errors", "substitutions", "deletions", "insertions", "wer",
    "insertion_rate", "empty_hyps", "looping_hyps", "same_as_fp32", "same_as_fp32_pct",
    "artifact_bytes", "param_bytes", "float_param_bytes", "float_share_pct", "compression_pct",
    "speedup_vs_fp32", "speedup_low", "speedup_high", "speedup_vs_ct2_int8", "speedup_vs_ct2_int8_low",
    "speedup_vs_ct2_int8_high", "rtfx", "rtfx_low", "rtfx_high", "fp32_rtfx", "rtf", "pairs", "timing_stop",
    "timing_protocol", "core_s_per_audio_h", "cpu_s_per_audio_h", "gpu_s_per_audio_h", "energy_j_per_audio_h",
    "energy_reason", "wall_s", "audio_s", "model_mem_mb", "peak_rss_mb", "peak_gpu_mb", "batch_size", "threads",
    "host", "host_isa", "host_cpu", "quantize_host",
]
#: Summary columns that are this run's own measurements (time, memory): they differ between
#: two runs of the same config, every other column is reproduced exactly (on the same host).
MEASURED_COLUMNS = frozenset({
    "speedup_vs_fp32", "speedup_low", "speedup_high", "speedup_vs_ct2_int8", "speedup_vs_ct2_int8_low",
    "speedup_vs_ct2_int8_high", "rtfx", "rtfx_low", "rtfx_high", "fp32_rtfx", "rtf", "pairs", "timing_stop",
    "core_s_per_audio_h", "cpu_s_per_audio_h", "gpu_s_per_audio_h", "energy_j_per_audio_h", "wall_s",
    "model_mem_mb", "peak_rss_mb", "peak_gpu_mb",
})
#: Score-record keys copied into an ok row.
SCORE_KEYS = ("n_utts", "ref_words", "errors", "substitutions", "deletions", "insertions", "wer",
              "empty_hyps", "looping_hyps")
#: Timing-record keys copied into an ok row (evaluate/speed.py writes the speed ones).
TIMING_KEYS = ("speedup_vs_fp32", "speedup_low", "speedup_high", "rtfx", "rtfx_low", "rtfx_high", "fp32_rtfx",
               "rtf", "pairs", "timing_stop", "timing_protocol", "core_s_per_audio_h", "cpu_s_per_audio_h",
               "gpu_s_per_audio_h", "energy_j_per_audio_h", "energy_reason", "wall_s", "audio_s", "model_mem_mb",
               "peak_rss_mb", "peak_gpu_mb", "batch_size", "threads")


def _is_ct2_int8(quant: dict) -> bool:
    return quant.get("library") == "ctranslate2" and (quant.get("params") or {}).get("compute_type") == "int8"


def cell_row(cell: dict, quant: QuantRecord, timing: TimingRecord, score: ScoreRecord) -> dict:
    """One summary row from the cell's three records (quantize, transcribe, score).

    ``compute_dtype`` is the timing record's (what the transcription ran in) if
    it has one, else the quantize record's.  ``insertion_rate`` = insertions /
    reference words (a fraction, like ``wer``): hallucinated words show up here
    first.
    """
    row = {k: cell[k] for k in ("model", "scheme", "device", "corpus")}
    row.update(library=quant.get("library"), method=quant.get("method"), bits=quant.get("bits"))
    row["compute_dtype"] = timing.get("compute_dtype") or quant.get("compute_dtype")
    status = "ok"
    for rec in (quant, timing, score):
        if rec.get("status") != "ok":
            status = rec.get("status", "failed")
            row.update(reason=rec.get("reason"), log=rec.get("log"))
            break
    row["status"] = status
    for k in ("artifact_bytes", "param_bytes", "float_param_bytes"):
        row[k] = quant.get(k)
    host = timing.get("host") or {}
    row.update(host=host_id(host) or None, host_isa=isa_label(host) or None, host_cpu=host.get("cpu_model"))
    qhost = quant.get("host")
    row["quantize_host"] = host_id(qhost) if qhost and host_id(qhost) != row["host"] else None
    if status == "ok":
        for k in SCORE_KEYS:
            row[k] = score.get(k)
        for k in TIMING_KEYS:
            row[k] = timing.get(k)
        ins, words = row.get("insertions"), row.get("ref_words")
        row["insertion_rate"] = ins / words if isinstance(ins, (int, float)) and words else math.nan
    return row


def build_summary(cells: list[dict], unsupported: list[dict]) -> pd.DataFrame:
    """``cells``: dicts with model/scheme/device/corpus and paths quant/timing/score;
    ``unsupported``: dicts with model/scheme/device/corpus/library/reason/bits/method."""
    quants = [read_json(c["quant"]) for c in cells]
    timings = [read_json(c["timing"]) for c in cells]
    rows = [cell_row(c, q, t, read_json(c["score"])) for c, q, t in zip(cells, quants, timings, strict=True)]
    add_speedups(rows, quants, timings)
    add_agreement(rows, cells, quants)
    for u in unsupported:
        rows.append({**u, "status": "unsupported"})
    df = pd.DataFrame(rows, columns=COLUMNS)
    fp32 = df[(df.library == "fp32") & df.artifact_bytes.notna()].groupby("model").artifact_bytes.first()
    df["compression_pct"] = [
        100.0 * (1.0 - a / fp32[m]) if m in fp32 and isinstance(a, (int, float)) and not math.isnan(a) else math.nan
        for m, a in zip(df.model, df.artifact_bytes, strict=True)
    ]
    df["float_share_pct"] = 100.0 * df.float_param_bytes / df.param_bytes
    return df.sort_values(["model", "corpus", "device", "scheme"], kind="stable").reset_index(drop=True)


def add_speedups(rows: list[dict], quants: list[dict], timings: list[dict]) -> None:
    """``speedup_vs_ct2_int8`` [low, high]: a row's paired speedup over fp32 divided by the CTranslate2 int8
    cell's (same model, device, corpus and host), with a bootstrap interval over both cells' pair ratios.

    Both speedups were measured against the same fp32 reference, each in its own job, so their quotient
    is the speed of one over the other with the drift of either job cancelled; across hosts it is not
    formed (NaN).  ``speedup_vs_fp32`` itself is the cell's own paired measurement (evaluate/speed.py).
    """
    from ..evaluate.stats import ratio_of_locations_interval

    ref = {(r["model"], r["device"], r["corpus"], r.get("host")): t.get("pair_ratios")
           for r, q, t in zip(rows, quants, timings, strict=True) if _is_ct2_int8(q) and r["status"] == "ok"}
    for r, t in zip(rows, timings, strict=True):
        base = ref.get((r["model"], r["device"], r["corpus"], r.get("host")))
        own = t.get("pair_ratios")
        if r["status"] == "ok" and base and own:
            r["speedup_vs_ct2_int8"], r["speedup_vs_ct2_int8_low"], r["speedup_vs_ct2_int8_high"] = (
                round(v, 4) for v in ratio_of_locations_interval(own, base))
        else:
            r["speedup_vs_ct2_int8"] = r["speedup_vs_ct2_int8_low"] = r["speedup_vs_ct2_int8_high"] = math.nan


#: What a random-weight model's row never shows: its transcripts mean nothing.
ACCURACY_COLUMNS = ("errors", "substitutions", "deletions", "insertions", "wer", "insertion_rate", "empty_hyps",
                    "looping_hyps", "same_as_fp32", "same_as_fp32_pct")
RANDOM_WEIGHTS = "random weights (models.<model>.source: random): size and speed only, never a WER"


def without_accuracy(df: pd.DataFrame, models: set[str]) -> pd.DataFrame:
    """Blank every accuracy figure of ``models`` (random weights: :data:`RANDOM_WEIGHTS` says so)."""
    rows = df.model.isin(models)
    if rows.any():
        df = df.copy()
        df.loc[rows, list(ACCURACY_COLUMNS)] = math.nan
        df["reason"] = df["reason"].astype(object)  # all-empty reasons read as float
        df.loc[rows & (df.status == "ok"), "reason"] = RANDOM_WEIGHTS
    return df


def normalized_hypotheses(transcript: str | Path) -> dict[str, str]:
    """Utterance id -> its hypothesis as scored (Whisper's English normalisation)."""
    import json

    from ..evaluate.scoring import normalize

    lines = Path(transcript).read_text(encoding="utf-8").split("\n")
    return {r["id"]: normalize(r["hypothesis"]) for r in map(json.loads, filter(None, lines))}


def add_agreement(rows: list[dict], cells: list[dict], quants: list[dict]) -> None:
    """``same_as_fp32`` / ``same_as_fp32_pct``: utterances whose normalised hypothesis is exactly the fp32
    cell's (same model, device and corpus): the parity of a runtime's float32 cell, the regressions of a
    quantised one.  The fp32 cell itself is 100 %; NaN without an ok fp32 cell."""
    fp32 = {(r["model"], r["device"], r["corpus"]): normalized_hypotheses(c["transcript"])
            for r, c, q in zip(rows, cells, quants, strict=True)
            if q.get("library") == "fp32" and r["status"] == "ok" and c.get("transcript")}
    for r, c in zip(rows, cells, strict=True):
        ref = fp32.get((r["model"], r["device"], r["corpus"]))
        if ref is None or r["status"] != "ok" or not c.get("transcript"):
            r["same_as_fp32"] = r["same_as_fp32_pct"] = math.nan
            continue
        hyps = normalized_hypotheses(c["transcript"])
        same = sum(hyps.get(k) == v for k, v in ref.items())
        r["same_as_fp32"] = same
        r["same_as_fp32_pct"] = 100.0 * same / len(ref) if ref else math.nan


def speaker_files(corpora: dict[str, str | Path], specs: dict[str, dict]) -> dict[str, Path]:
    """Corpus name -> its ``speakers.tsv``, for ``report.bootstrap_unit: speaker``.

    ``corpora`` maps each graded corpus to its manifest; a corpus whose source listed no
    speakers is an error naming it (the config check already refuses the embedded set).
    """
    out = {}
    for corpus, manifest in corpora.items():
        path = Path(manifest).parent / SPEAKERS
        if not path.exists():
            raise ValueError(f"report.bootstrap_unit: speaker, but corpus {corpus!r} (source "
                             f"{specs[corpus]['source']}) lists no speakers ({path} does not exist); "
                             "use bootstrap_unit: utterance")
        out[corpus] = path
    return out


def write_report(cells: list[dict], unsupported: list[dict], out_csv: str | Path, out_md: str | Path,
                 plot_dir: str | Path, n_resamples: int, seed: int, clean: str | None, noisy: str | None,
                 out_study: str | Path | None = None, pareto_max_wer: float | None = 0.5,
                 models: dict | None = None, corpora: dict | None = None,
                 speakers: dict[str, str | Path] | None = None) -> None:
    """Write summary.csv, summary.md, the study comparison and the plots.

    ``pareto_max_wer``: WER (fraction) above which a cell is never on the Pareto
    front; ``models``/``corpora``: the config's specs, which decide where the
    study's figures are compared numerically (:func:`study.compare`);
    ``speakers``: corpus -> its ``speakers.tsv``, for a bootstrap over speakers
    (``report.bootstrap_unit: speaker``).
    """
    from . import plots, study
    from .markdown import summary_markdown
    from .order import sort_summary
    from .statistics import add_statistics, read_utt_scores

    df = build_summary(cells, unsupported)
    random = {m for m, spec in (models or {}).items() if spec.get("source") == "random"}
    df = without_accuracy(df, random)
    utt = {(c["model"], c["scheme"], c["device"], c["corpus"]): read_utt_scores(c["utts"])
           for c in cells if c["model"] not in random}
    clusters = {corpus: read_speakers(path) for corpus, path in (speakers or {}).items()}
    df = add_statistics(df, {k: v for k, v in utt.items() if len(v)}, n_resamples=n_resamples, seed=seed,
                               pareto_max_wer=pareto_max_wer, speakers=clusters)
    df = sort_summary(df)
    _atomic_csv(df, out_csv)
    md = summary_markdown(df, pareto_max_wer=pareto_max_wer)
    comparison = study.compare(df, clean, noisy, models=models, corpora=corpora)
    if out_study:
        _atomic_csv(comparison, out_study)
    md += "\n## Beside the study's published figures\n\n" + study.comparison_markdown(comparison)
    write_text(out_md, md)
    plot_dir = Path(plot_dir)
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots.plot_size_vs_wer(df, plot_dir / "size_vs_wer", max_wer=pareto_max_wer)
    plots.plot_wer_vs_bits(df, plot_dir / "wer_vs_bits")
    plots.plot_speed_vs_wer(df, plot_dir / "speed_vs_wer")
    if clean and noisy:
        plots.plot_clean_vs_noisy(df, plot_dir / "clean_vs_noisy", clean, noisy)


def _atomic_csv(df: pd.DataFrame, path: str | Path) -> None:
    write_text(path, df.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
