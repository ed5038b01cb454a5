"""Attach uncertainty statistics to the summary table.

:func:`add_statistics` turns ``results/report/summary.csv`` (one row per
cell) plus the per-utterance score tables into the numbers the report
needs: a bootstrap interval for every WER, the paired difference to the fp32
baseline of the same model/device/corpus, the share of utterances that got no
worse than on that baseline, and membership of the size/WER Pareto front of
usable cells.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluate.stats import bootstrap_wer_ci, cluster_sums, paired_bootstrap_delta, pareto_frontier
from ..evaluate.utterance_scores import UTT_COLUMNS

__all__ = ["PARETO_MAX_WER", "STAT_COLUMNS", "add_statistics", "read_utt_scores"]

#: Columns :func:`add_statistics` adds.
STAT_COLUMNS = (
    "wer_ci_low",
    "wer_ci_high",
    "delta_wer",
    "delta_ci_low",
    "delta_ci_high",
    "delta_p_value",
    "delta_significant",
    "qoi_pct",
    "on_pareto_front",
)
#: Default WER (a fraction) above which a cell is unusable and never on the Pareto front.
PARETO_MAX_WER = 0.5

CellKey = tuple[str, str, str, str]  # (model, scheme, device, corpus)


def read_utt_scores(path: str | Path) -> pd.DataFrame:
    """Read one per-utterance score TSV, keeping ids as strings (``"0001"`` stays ``"0001"``)."""
    df = pd.read_csv(path, sep="\t", dtype={"id": str}, keep_default_na=False)
    missing = [c for c in ("id", "ref_words", "errors") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(UTT_COLUMNS)} "
                         "(id, ref_words and errors at least)")
    return df


def _is_ok(row: pd.Series) -> bool:
    return str(row.get("status", "ok")) == "ok"


def _cell_name(key: CellKey) -> str:
    model, scheme, device, corpus = key
    return f"model={model} scheme={scheme} device={device} corpus={corpus}"


def _baseline_index(summary: pd.DataFrame) -> dict[tuple[str, str, str], int]:
    """Map (model, device, corpus) -> row label of its fp32 baseline row.

    When a model has several fp32-library rows on one device (unusual), the one
    whose scheme is literally ``fp32`` wins, otherwise the first by scheme name.
    """
    base: dict[tuple[str, str, str], int] = {}
    fp32 = summary[summary["library"].astype(str) == "fp32"]
    ranked = sorted(
        fp32.index, key=lambda i: (str(fp32.at[i, "scheme"]) != "fp32", str(fp32.at[i, "scheme"]))
    )
    for i in ranked:
        key = (str(fp32.at[i, "model"]), str(fp32.at[i, "device"]), str(fp32.at[i, "corpus"]))
        base.setdefault(key, i)
    return base


def _paired_arrays(
    cell: pd.DataFrame, base: pd.DataFrame, cell_key: CellKey, base_key: CellKey
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Align a cell's utterances with its baseline's by id (returned too); raise if they are not the same set."""
    ids_c = cell["id"].astype(str)
    ids_b = base["id"].astype(str)
    for name, ids, key in (("cell", ids_c, cell_key), ("baseline", ids_b, base_key)):
        if ids.duplicated().any():
            dup = ids[ids.duplicated()].iloc[0]
            raise ValueError(f"duplicate utterance id {dup!r} in the scores of {name} {_cell_name(key)}")
    set_c, set_b = set(ids_c), set(ids_b)
    if set_c != set_b:
        only_c = sorted(set_c - set_b)
        only_b = sorted(set_b - set_c)
        raise ValueError(
            f"utterance ids differ between {_cell_name(cell_key)} and its fp32 baseline "
            f"{_cell_name(base_key)}: {len(only_c)} only in the former (e.g. {only_c[:3]}), "
            f"{len(only_b)} only in the latter (e.g. {only_b[:3]})"
        )
    merged = pd.merge(
        cell.assign(id=ids_c)[["id", "errors", "ref_words"]],
        base.assign(id=ids_b)[["id", "errors", "ref_words"]],
        on="id",
        suffixes=("_c", "_b"),
        validate="one_to_one",
    ).sort_values("id", kind="mergesort")  # order by id: results must not depend on file order
    if not np.array_equal(merged["ref_words_c"].to_numpy(), merged["ref_words_b"].to_numpy()):
        bad = merged.loc[merged["ref_words_c"] != merged["ref_words_b"], "id"].iloc[0]
        raise ValueError(
            f"reference word counts differ for utterance {bad!r} between {_cell_name(cell_key)} and "
            f"{_cell_name(base_key)}; both must be scored against the same normalised references"
        )
    return (
        merged["errors_c"].to_numpy(np.float64),
        merged["errors_b"].to_numpy(np.float64),
        merged["ref_words_c"].to_numpy(np.float64),
        merged["id"].tolist(),
    )


def add_statistics(
    summary: pd.DataFrame,
    utt_scores: Mapping[CellKey, pd.DataFrame],
    n_resamples: int = 1000,
    seed: int = 0,
    pareto_max_wer: float | None = PARETO_MAX_WER,
    speakers: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Return a copy of ``summary`` with the columns of :data:`STAT_COLUMNS` added.

    With ``speakers`` (corpus -> {utterance id: speaker}), both bootstraps of a
    cell on such a corpus resample speakers (with all their utterances) instead
    of utterances: the cluster bootstrap, for utterances of one speaker are not
    independent.  ``qoi_pct`` stays per utterance.

    ``utt_scores`` maps ``(model, scheme, device, corpus)`` to that cell's
    per-utterance scores (columns ``id``, ``ref_words``, ``errors`` at least).

    * ``wer_ci_low``/``wer_ci_high``: percentile bootstrap interval of the WER
      (fractions, like ``wer``).
    * ``delta_*``: paired bootstrap of WER(cell) - WER(fp32) against the fp32
      row of the same model, device and corpus -- never another device's: a
      cell whose device has no fp32 row gets NaN.  Pairs utterances by id.
      The fp32 row itself gets delta 0, interval [0, 0], p-value 1, not
      significant.
    * ``qoi_pct``: share (%) of the utterances whose word errors are no more
      than the same baseline's errors on that utterance (100 for the baseline
      itself; NaN where ``delta_wer`` is NaN).  A scheme can keep the corpus
      WER and still break some utterances; this shows how many it did not.
    * ``on_pareto_front``: not dominated in (artifact_bytes, wer) among the ok
      rows of the same model, corpus and device whose WER is at most
      ``pareto_max_wer`` (a fraction; a smaller but unusable model is no
      trade-off).

    Statistics are NaN (``delta_significant`` <NA>) where they cannot be
    computed: rows whose status is not ok, cells without utterance scores (with
    a warning), a device without an fp32 row, or a baseline that failed.
    Differing utterance id sets between a cell and its baseline are a
    pipeline bug and raise ValueError naming both cells.
    Every bootstrap uses ``seed``, so the output is deterministic.
    """
    out = summary.copy()
    n = len(out)
    ci_low = np.full(n, np.nan)
    ci_high = np.full(n, np.nan)
    d_wer = np.full(n, np.nan)
    d_low = np.full(n, np.nan)
    d_high = np.full(n, np.nan)
    d_p = np.full(n, np.nan)
    d_sig: list[bool | None] = [None] * n
    qoi = np.full(n, np.nan)
    pareto = np.zeros(n, dtype=bool)
    if n == 0:
        return _assign(out, ci_low, ci_high, d_wer, d_low, d_high, d_p, d_sig, qoi, pareto)

    required = ["model", "scheme", "library", "device", "corpus"]
    missing = [c for c in required if c not in out.columns]
    if missing:
        raise ValueError(f"summary lacks column(s) {missing}")

    def key_of(i: int) -> CellKey:
        row = out.iloc[i]
        return (str(row["model"]), str(row["scheme"]), str(row["device"]), str(row["corpus"]))

    warned: set[CellKey] = set()

    def ok_scores(i: int) -> pd.DataFrame | None:
        if not _is_ok(out.iloc[i]):
            return None
        scores = utt_scores.get(key_of(i))
        if scores is None and key_of(i) not in warned:
            warned.add(key_of(i))
            warnings.warn(
                f"no per-utterance scores for ok cell {_cell_name(key_of(i))}; its statistics stay NaN",
                stacklevel=3,
            )
        return scores

    baselines = _baseline_index(out.reset_index(drop=True))
    for i in range(n):
        scores = ok_scores(i)
        if scores is None:
            continue
        scores = scores.assign(id=scores["id"].astype(str)).sort_values("id", kind="mergesort")
        model, _scheme, device, corpus = key_of(i)
        clusters = (speakers or {}).get(corpus)
        errors, words = scores["errors"].to_numpy(np.float64), scores["ref_words"].to_numpy(np.float64)
        if clusters is not None:
            errors, words = cluster_sums(scores["id"], clusters, errors, words, where=f"corpus {corpus}: ")
        ci_low[i], ci_high[i] = bootstrap_wer_ci(errors, words, n_resamples=n_resamples, seed=seed)
        b = baselines.get((model, device, corpus))
        if b is None:
            continue
        if b == i:
            d_wer[i], d_low[i], d_high[i], d_p[i], d_sig[i] = 0.0, 0.0, 0.0, 1.0, False
            qoi[i] = 100.0
            continue
        base_scores = ok_scores(b)
        if base_scores is None:
            continue
        ea, eb, r, ids = _paired_arrays(scores, base_scores, key_of(i), key_of(b))
        if clusters is not None:
            ca, cb, cr = cluster_sums(ids, clusters, ea, eb, r, where=f"corpus {corpus}: ")
            res = paired_bootstrap_delta(ca, cb, cr, n_resamples=n_resamples, seed=seed)
        else:
            res = paired_bootstrap_delta(ea, eb, r, n_resamples=n_resamples, seed=seed)
        d_wer[i], d_low[i], d_high[i], d_p[i] = res.delta, res.ci_low, res.ci_high, res.p_value
        d_sig[i] = None if math.isnan(res.delta) else res.significant
        if not math.isnan(res.delta):
            qoi[i] = 100.0 * float(np.count_nonzero(ea <= eb)) / ea.size

    status_ok = (
        out["status"].astype(str).eq("ok").to_numpy() if "status" in out.columns else np.ones(n, dtype=bool)
    )
    if {"artifact_bytes", "wer"} <= set(out.columns):
        size = pd.to_numeric(out["artifact_bytes"], errors="coerce").to_numpy(np.float64)
        wer = pd.to_numeric(out["wer"], errors="coerce").to_numpy(np.float64)
        cap = math.inf if pareto_max_wer is None else float(pareto_max_wer)
        usable = status_ok & (wer <= cap)  # NaN compares False: never on the front
        groups = out[["model", "corpus", "device"]].astype(str).agg("\x1f".join, axis=1).to_numpy()
        for g in pd.unique(groups):
            pos = np.flatnonzero((groups == g) & usable)
            if pos.size:
                pareto[pos] = pareto_frontier(size[pos], wer[pos])
    return _assign(out, ci_low, ci_high, d_wer, d_low, d_high, d_p, d_sig, qoi, pareto)


def _assign(out, ci_low, ci_high, d_wer, d_low, d_high, d_p, d_sig, qoi, pareto) -> pd.DataFrame:
    out["wer_ci_low"] = ci_low
    out["wer_ci_high"] = ci_high
    out["delta_wer"] = d_wer
    out["delta_ci_low"] = d_low
    out["delta_ci_high"] = d_high
    out["delta_p_value"] = d_p
    out["delta_significant"] = pd.array(d_sig, dtype="boolean")
    out["qoi_pct"] = qoi
    out["on_pareto_front"] = pareto
    return out
