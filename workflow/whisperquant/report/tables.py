"""Attach uncertainty statistics to the summary table and render it as Markdown.

:func:`add_statistics` turns ``results/report/summary.csv`` (one row per
cell) plus the per-utterance score tables into the numbers the report
needs: a bootstrap interval for every WER, the paired difference to the fp32
baseline of the same model/device/corpus, the share of utterances that got no
worse than on that baseline, and membership of the size/WER Pareto front of
usable cells.  :func:`summary_markdown` renders that as one table per model
and corpus, in a fixed order so the report diffs cleanly between runs.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluate.stats import bootstrap_wer_ci, cluster_sums, paired_bootstrap_delta, pareto_frontier

__all__ = [
    "LIBRARY_ORDER",
    "MD_COLUMNS",
    "PARETO_MAX_WER",
    "STAT_COLUMNS",
    "UTT_COLUMNS",
    "add_statistics",
    "read_utt_scores",
    "sort_summary",
    "summary_markdown",
]

#: Columns of a per-utterance score TSV.
UTT_COLUMNS = ("id", "ref_words", "substitutions", "deletions", "insertions", "hits", "errors", "empty", "looping")
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
#: Report order of libraries; unknown libraries follow, alphabetically.
LIBRARY_ORDER = ("fp32", "pytorch", "torchao", "quanto", "hqq", "bnb", "ctranslate2", "onnxruntime", "openvino")
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


# --------------------------------------------------------------------------- Markdown


def _library_rank(lib: str) -> tuple[int, str]:
    return (LIBRARY_ORDER.index(lib), "") if lib in LIBRARY_ORDER else (len(LIBRARY_ORDER), lib)


def effective_bits(row: pd.Series) -> float:
    """Bit-width of a row; fp32 rows with empty ``bits`` count as 32."""
    bits = pd.to_numeric(pd.Series([row.get("bits")]), errors="coerce").iloc[0]
    if pd.isna(bits) and str(row.get("library")) == "fp32":
        return 32.0
    return float(bits)


def _natural_key(text: str) -> str:
    """Sort key that orders embedded numbers by value ("g32" < "g64" < "g128"), deterministically."""
    return re.sub(r"\d+", lambda m: f"{int(m.group()):012d}", text.lower()) + "\x00" + text


def sort_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Report order: model, corpus, library (:data:`LIBRARY_ORDER`), bits descending, scheme, device.

    Scheme names compare "naturally" (numbers by value), so group sizes read g32, g64, g128.
    """
    if df.empty:
        return df.copy()
    keys = pd.DataFrame(
        {
            "model": df["model"].astype(str),
            "corpus": df["corpus"].astype(str),
            "lib_rank": [_library_rank(str(x))[0] for x in df["library"]],
            "lib_name": [_library_rank(str(x))[1] for x in df["library"]],
            # bits descending; rows without a bit-width sort last within their library
            "neg_bits": [
                math.inf if math.isnan(b) else -b for b in (effective_bits(r) for _, r in df.iterrows())
            ],
            "scheme": [_natural_key(str(x)) for x in df["scheme"]],
            "device": df["device"].astype(str) if "device" in df.columns else "",
        },
        index=df.index,
    )
    order = keys.sort_values(list(keys.columns), kind="mergesort").index
    return df.loc[order]


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _fmt(x, spec: str, dash: str = "–") -> str:
    v = _num(x)
    return dash if math.isnan(v) else format(v, spec)


def _truthy(v) -> bool:
    """True for True/1/"True"; False for False, NaN, <NA>, None and "" (e.g. read back from CSV)."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1")
    return bool(v)


def _signed(v: float, decimals: int) -> str:
    """``+0.12`` / ``-0.12``, and a plain ``0.00`` for anything that rounds to zero."""
    text = f"{v:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short_reason(reason, limit: int = 160) -> str:
    text = "" if reason is None or (isinstance(reason, float) and math.isnan(reason)) else str(reason)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: The Markdown table's columns: (header, alignment); a device column follows ``bits`` when a
#: table holds several devices.
MD_COLUMNS = (
    ("scheme", "---"),
    ("library", "---"),
    ("bits", "---:"),
    ("compute", "---"),
    ("size MB", "---:"),
    ("compr. %", "---:"),
    ("mem MB", "---:"),
    ("WER % [95 % CI]", "---:"),
    ("ΔWER pp [95 % CI]", "---:"),
    ("QoI %", "---:"),
    ("= fp32 %", "---:"),
    ("empty", "---:"),
    ("loop", "---:"),
    ("× fp32 [95 % CI]", "---:"),
    ("RTFx [95 % CI]", "---:"),
    ("core-s / audio h", "---:"),
)
#: Appended when a table holds a CTranslate2 int8 cell (the deployment reference).
MD_CT2_COLUMN = ("× CT2 int8 [95 % CI]", "---:")


def _legend(pareto_max_wer: float | None) -> str:
    cap = "" if pareto_max_wer is None else f" among the cells with WER ≤ {100 * pareto_max_wer:g} %"
    return (
        "**compute**: the dtype the model computes in. **size**: saved artifact, MB (10^6 bytes); "
        "**compr.**: % smaller than the fp32 artifact; **mem**: model memory once loaded, MB. "
        "**WER**: % with a 95 % percentile-bootstrap interval over utterances. "
        "**ΔWER**: WER − fp32 WER of the same model, device and corpus, in percentage points, with a "
        "paired-bootstrap 95 % interval; `*` = the interval excludes 0; – = no fp32 row on that device. "
        "**QoI**: % of utterances with no more word errors than fp32 on the same utterance; **= fp32**: % "
        "whose normalised hypothesis is exactly fp32's. "
        "**empty**: utterances with an empty hypothesis (the reference is not); **loop**: utterances "
        "whose hypothesis repeats a 1–5-word n-gram ≥ 4 times in a row where the reference does not. "
        "**× fp32**: speedup over fp32 (transformers) of the same model and device, measured in the cell's own "
        "job by paired, interleaved timing on a fixed workload of the corpus (median of per-pair ratios, "
        "distribution-free 95 % interval; the fp32 row is fp32 against itself: the protocol's noise); "
        "**× CT2 int8**: that speedup over CTranslate2 int8's, both against the same fp32 on the same host. "
        "**RTFx**: seconds of audio per second of wall time on the timing workload, this host at that "
        "minute (compare within one host and run only); **core-s / audio h**: core-seconds the job's cores "
        "spent per hour of audio. "
        f"`†`: on the size/WER Pareto front{cap}."
    )


def summary_markdown(
    summary_with_stats: pd.DataFrame, decimals: int = 2, pareto_max_wer: float | None = PARETO_MAX_WER
) -> str:
    """One Markdown table per model and corpus, plus the cells that did not run.

    Columns (:data:`MD_COLUMNS`, explained in a legend above the tables):
    scheme, library, bits, compute dtype, size MB (artifact_bytes / 1e6),
    compression %, model memory MB, WER % with its 95 % bootstrap interval
    (``4.31 [3.10, 5.62]``), ΔWER in percentage points against fp32 with its
    paired interval and ``*`` when the interval excludes 0, QoI %, the share of
    hypotheses identical to fp32's (``= fp32 %``), the
    numbers of empty and looping hypotheses, and RTFx with its range over
    timed batches.  A device column appears when the table holds more than
    one device.  Unsupported and failed cells are listed below each table
    with their status and reason.  Row order is :func:`sort_summary`.
    ``pareto_max_wer`` only words the legend (the front is
    :func:`add_statistics`' ``on_pareto_front``).
    """
    df = summary_with_stats
    lines = ["# Whisper post-training quantization: summary", ""]
    if df.empty:
        return "\n".join([*lines, "_No cells in the summary._", ""])
    lines += [_legend(pareto_max_wer), ""]
    lines += host_lines(df)
    df = sort_summary(df)
    multi_device = "device" in df.columns and df["device"].astype(str).nunique() > 1
    multi_host = len(hosts_of(df)) > 1
    status = df["status"].astype(str) if "status" in df.columns else pd.Series("ok", index=df.index)
    columns = list(MD_COLUMNS)
    if multi_device:
        columns.insert(3, ("device", "---"))
    if multi_host:
        columns.insert(3 + multi_device, ("host", "---"))
    with_ct2 = pd.to_numeric(df.get("speedup_vs_ct2_int8"), errors="coerce").notna().any() \
        if "speedup_vs_ct2_int8" in df.columns else False
    if with_ct2:
        columns.append(MD_CT2_COLUMN)
    header = [c[0] for c in columns]
    for (model, corpus), g in df.groupby([df["model"].astype(str), df["corpus"].astype(str)], sort=False):
        ok = g[status.loc[g.index] == "ok"]
        bad = g[status.loc[g.index] != "ok"]
        n_utts = {int(v) for v in pd.to_numeric(ok.get("n_utts"), errors="coerce").dropna()} if len(ok) else set()
        size = f" ({n_utts.pop()} utterances)" if len(n_utts) == 1 else ""
        lines += [f"## {model} — {corpus}{size}", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("| " + " | ".join(c[1] for c in columns) + " |")
        if ok.empty:
            lines.append("| " + " | ".join(["–"] * len(header)) + " |")
        for _, r in ok.iterrows():
            lines.append("| " + " | ".join(_row_cells(r, multi_device, decimals, with_ct2, multi_host)) + " |")
        lines.append("")
        if not bad.empty:
            lines.append("Not measured:")
            lines.append("")
            for _, r in bad.iterrows():
                where = f", {r['device']}" if multi_device else ""
                reason = _short_reason(r.get("reason"))
                lines.append(
                    f"- `{r['scheme']}` ({r['library']}{where}): **{r['status']}**"
                    + (f" — {reason}" if reason else "")
                )
            lines.append("")
    return "\n".join(lines)


def _text(v) -> str:
    """A string cell: – for None/NaN/empty."""
    if v is None or (not isinstance(v, str) and pd.isna(v)) or str(v).strip() == "":
        return "–"
    return _escape(str(v))


def _speed(v: float) -> str:
    """Three significant digits without a trailing point: 0.512, 5.12, 51.2, 512."""
    if math.isnan(v):
        return "–"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def hosts_of(df: pd.DataFrame) -> dict[str, str]:
    """Host id -> "CPU model, ISA" of the measured rows of a summary (empty without host columns)."""
    if "host" not in df.columns:
        return {}
    out = {}
    for h, cpu, isa in zip(df["host"], df.get("host_cpu", df["host"]), df.get("host_isa", df["host"]), strict=True):
        if isinstance(h, str) and h:
            out.setdefault(h, f"{cpu}, {isa}")
    return out


def host_lines(df: pd.DataFrame) -> list[str]:
    """The report's host paragraph: the one host every figure comes from, or a warning that there are several."""
    hosts = hosts_of(df)
    if not hosts:
        return []
    if len(hosts) == 1:
        (h, what), = hosts.items()
        return [f"**Host**: every cell was transcribed and timed on `{h}` ({what}).", ""]
    listing = "; ".join(f"`{h}` ({what})" for h, what in sorted(hosts.items()))
    return [f"> **Warning: this table mixes {len(hosts)} hosts**: {listing}. WER can differ between hosts "
            "(int8 kernels differ by ISA), so a host column is shown. Each speedup was measured within its own "
            "cell's job on one host and compares across rows; absolute RTFx and core-seconds compare only between "
            "rows of the same host, and × CT2 int8 is formed only within a host.", ""]


def _row_cells(r: pd.Series, multi_device: bool, decimals: int, with_ct2: bool = False,
               multi_host: bool = False) -> list[str]:
    d = decimals
    bits = effective_bits(r)
    scheme = f"`{_escape(str(r['scheme']))}`"
    if _truthy(r.get("on_pareto_front")):
        scheme += " †"
    cells = [scheme, _escape(str(r["library"])), "–" if math.isnan(bits) else f"{bits:g}"]
    if multi_device:
        cells.append(_escape(str(r["device"])))
    if multi_host:
        cells.append(_text(r.get("host")))
    cells.append(_text(r.get("compute_dtype")))
    cells.append(_fmt(_num(r.get("artifact_bytes")) / 1e6, ".1f"))
    cells.append(_fmt(r.get("compression_pct"), ".1f"))
    cells.append(_fmt(r.get("model_mem_mb"), ".0f"))
    wer = _num(r.get("wer")) * 100
    lo, hi = _num(r.get("wer_ci_low")) * 100, _num(r.get("wer_ci_high")) * 100
    w = _fmt(wer, f".{d}f")
    if not (math.isnan(lo) or math.isnan(hi)):
        w += f" [{lo:.{d}f}, {hi:.{d}f}]"
    cells.append(w)
    delta = _num(r.get("delta_wer")) * 100
    dlo, dhi = _num(r.get("delta_ci_low")) * 100, _num(r.get("delta_ci_high")) * 100
    if math.isnan(delta):
        cells.append("–")
    elif str(r["library"]) == "fp32" and delta == 0 and dlo == 0 and dhi == 0:
        cells.append("baseline")
    else:
        text = _signed(delta, d)
        if not (math.isnan(dlo) or math.isnan(dhi)):
            text += f" [{_signed(dlo, d)}, {_signed(dhi, d)}]"
        if _truthy(r.get("delta_significant")):
            text += " *"
        cells.append(text)
    cells.append(_fmt(r.get("qoi_pct"), ".1f"))
    cells.append(_fmt(r.get("same_as_fp32_pct"), ".1f"))
    cells.append(_fmt(r.get("empty_hyps"), ".0f"))
    cells.append(_fmt(r.get("looping_hyps"), ".0f"))
    cells.append(_with_interval(r, "speedup_vs_fp32", "speedup_low", "speedup_high", ".2f"))
    rtfx, lo_x, hi_x = (_num(r.get(k)) for k in ("rtfx", "rtfx_low", "rtfx_high"))
    text = _speed(rtfx)
    if not (math.isnan(rtfx) or math.isnan(lo_x) or math.isnan(hi_x)):
        text += f" [{_speed(lo_x)}, {_speed(hi_x)}]"
    cells.append(text)
    cost = _num(r.get("core_s_per_audio_h"))
    cells.append(_fmt(cost if not math.isnan(cost) else _num(r.get("gpu_s_per_audio_h")), ".0f"))
    if with_ct2:
        cells.append(_with_interval(r, "speedup_vs_ct2_int8", "speedup_vs_ct2_int8_low", "speedup_vs_ct2_int8_high",
                                    ".2f"))
    return cells


def _with_interval(r: pd.Series, key: str, low: str, high: str, spec: str) -> str:
    """``1.42 [1.39, 1.45]``; the value alone where the interval is missing; – without a value."""
    v, lo, hi = (_num(r.get(k)) for k in (key, low, high))
    text = _fmt(v, spec)
    if not (math.isnan(v) or math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:{spec}}, {hi:{spec}}]"
    return text
