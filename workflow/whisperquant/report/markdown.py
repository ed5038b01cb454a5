"""The summary table as Markdown: one table per model and corpus, a legend, the host, what did not run.

:func:`summary_markdown` renders the table :func:`~whisperquant.report.statistics.add_statistics`
returns, in the order of :func:`~whisperquant.report.order.sort_summary`.
"""

from __future__ import annotations

import math

import pandas as pd

from .order import effective_bits, sort_summary
from .statistics import PARETO_MAX_WER

__all__ = ["MD_COLUMNS", "host_lines", "hosts_of", "summary_markdown"]


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
        "job by paired, interleaved timing on a fixed workload of the corpus (Hodges-Lehmann estimate of the "
        "per-pair ratios, signed-rank 95 % interval; the fp32 row is fp32 against itself: the protocol's noise); "
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
