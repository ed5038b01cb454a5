"""Report figures of the summary table: size, bit-width, noise robustness and speed against WER.

Every ``*_figure`` function takes the summary table with the columns of
:func:`whisperquant.report.statistics.add_statistics` (the interval columns are
optional: without them no error bars are drawn) and returns the
:class:`~matplotlib.figure.Figure` (what the tests inspect); its ``plot_*``
twin (:func:`~whisperquant.report.figure.figure_writer`) writes ``<stem>.png``
and ``<stem>.svg`` and returns both paths.
Drawn data carry a label (hidden from legends by its leading underscore):
``_points:<model>:<library>`` on each scatter series, ``_pareto-front:<model>``
on each front line, ``_wer-cap`` on the usable-WER limit,
``_baseline:<model>`` on fp32 reference lines, ``_diagonal`` on y = x.

Only rows with status ``ok`` and finite values are drawn; an empty selection
gives a figure that says "no data" instead of an error, so a sweep in which
every cell failed still produces its report.  When a cell was measured on
several devices, WER plots use one row per (model, scheme, corpus): the
``device`` argument if given, else the :data:`DISPLAY_DEVICE` row when there
is one, else the first device alphabetically (the quantised weights, and so
the WER, are meant to be device-independent; speed is plotted per device).
This is a choice of what to draw only: ΔWER always compares within a device.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from ..evaluate.stats import pareto_frontier
from .figure import (
    axis_label,
    figure_writer,
    freeze_layout,
    new_figure,
    no_data_figure,
    panel_no_data,
    set_log,
    style_axes,
    wants_log,
)
from .labels import label_points
from .plot_style import BASELINE_LINESTYLE, Style
from .statistics import PARETO_MAX_WER

__all__ = [
    "DISPLAY_DEVICE",
    "clean_vs_noisy_figure",
    "plot_clean_vs_noisy",
    "plot_size_vs_wer",
    "plot_speed_vs_wer",
    "plot_wer_vs_bits",
    "size_vs_wer_figure",
    "speed_vs_wer_figure",
    "wer_vs_bits_figure",
]

#: Device whose row the WER plots draw when a (model, scheme, corpus) ran on several devices.
DISPLAY_DEVICE = "cpu"


# --------------------------------------------------------------------------- data helpers


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _ok_rows(df: pd.DataFrame | None) -> pd.DataFrame:
    """Status-ok rows with numeric helper columns (WER and intervals in %, size in MB, bits)."""
    cols = ["model", "scheme", "library", "corpus", "device"]
    if df is None or not set(cols) <= set(df.columns):
        df = pd.DataFrame({c: pd.Series(dtype=str) for c in cols})
    out = df.copy()
    if "status" in out.columns:
        out = out[out["status"].astype(str) == "ok"]
    for c in cols:
        out[c] = out[c].astype(str)
    out["wer_pct"] = _num(out, "wer") * 100
    out["lo_pct"] = _num(out, "wer_ci_low") * 100
    out["hi_pct"] = _num(out, "wer_ci_high") * 100
    out["size_mb"] = _num(out, "artifact_bytes") / 1e6
    bits = _num(out, "bits")
    out["bits_eff"] = bits.where(~(bits.isna() & (out["library"] == "fp32")), 32.0)
    rtf = _num(out, "rtf")
    rtfx = _num(out, "rtfx")
    # RTFx = audio / wall; records without it fall back to 1 / RTF
    out["rtfx_v"] = rtfx.where(np.isfinite(rtfx), 1.0 / rtf.where(rtf > 0))
    out["rtfx_lo"] = _num(out, "rtfx_low")
    out["rtfx_hi"] = _num(out, "rtfx_high")
    out["speedup_v"] = _num(out, "speedup_vs_fp32")
    out["speedup_lo"] = _num(out, "speedup_low")
    out["speedup_hi"] = _num(out, "speedup_high")
    out["host_s"] = out["host"].astype(str) if "host" in out.columns else ""
    return out[np.isfinite(out["wer_pct"].to_numpy(dtype=float))]


def _one_device(df: pd.DataFrame, device: str | None) -> pd.DataFrame:
    """One row per (model, scheme, corpus): ``device`` if given, else cpu, else the first device."""
    if df.empty:
        return df
    if device is not None:
        return df[df["device"] == device]
    rank = (df["device"] != DISPLAY_DEVICE).astype(int)
    df = df.assign(_rank=rank).sort_values(["_rank", "device"], kind="mergesort")
    df = df.drop_duplicates(["model", "scheme", "corpus"], keep="first").drop(columns="_rank")
    return df


def _yerr(sub: pd.DataFrame, value: str = "wer_pct", lo: str = "lo_pct", hi: str = "hi_pct") -> np.ndarray | None:
    lo, hi, v = sub[lo].to_numpy(), sub[hi].to_numpy(), sub[value].to_numpy()
    if not np.isfinite(lo).any():
        return None
    err = np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
    return np.nan_to_num(err, nan=0.0)



def _device_note(df: pd.DataFrame) -> str:
    devs = sorted(set(df["device"]))
    return f"device: {', '.join(devs)}" if devs else ""


def _draw_points(ax, sub: pd.DataFrame, style: Style, x: str, y: str, xerr=False, yerr=True,
                 yrange: tuple[str, str] | None = None) -> None:
    """Scatter ``sub`` by (model, library) with optional error bars: the WER CI on the axis
    showing WER (``xerr``/``yerr``), or the columns ``yrange`` (low, high) on y."""
    for (model, lib), g in sub.groupby(["model", "library"], sort=True):
        ye = _yerr(g, y, *yrange) if yrange else _yerr(g) if yerr else None
        xe = _yerr(g) if xerr else None
        _errorbar_points(ax, g[x], g[y], xe, ye, style, model, lib, elinewidth=0.8, capsize=2)


def _errorbar_points(ax, xs, ys, xerr, yerr, style: Style, model: str, lib: str, elinewidth: float,
                     capsize: float) -> None:
    """One (model, library) series of points with error bars, labelled for the figure tests."""
    bars = ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, fmt=style.marker(model), color=style.color(lib), ms=5.5,
                       mec="white", mew=0.5, ecolor=style.color(lib), elinewidth=elinewidth, capsize=capsize,
                       alpha=0.9, ls="none", zorder=3)
    bars.lines[0].set_label(f"_points:{model}:{lib}")



# ---------------------------------------------------------------- figures


def size_vs_wer_figure(
    df: pd.DataFrame, device: str | None = None, max_wer: float | None = PARETO_MAX_WER
) -> Figure:
    """Artifact size (MB) against WER (%), one panel per corpus, with each model's Pareto front.

    Colour = library, marker = model, error bars = 95 % bootstrap interval,
    labels = scheme.  The front (not dominated in size and WER) is recomputed
    from the plotted points whose WER is at most ``max_wer`` (a fraction;
    ``None``: no limit) and drawn as a step line: the best WER reachable at or
    below each size.  Points above the limit are drawn but never on the front;
    a dashed line marks the limit when any point lies above it.
    """
    title = "Artifact size vs word error rate"
    data = _one_device(_ok_rows(df), device)
    data = data[np.isfinite(data["size_mb"])]
    if data.empty:
        return no_data_figure(title)
    cap_pct = math.inf if max_wer is None else 100.0 * float(max_wer)
    above_cap = bool((data["wer_pct"] > cap_pct).any())
    style = Style(data)
    corpora = sorted(set(data["corpus"]))
    fig, axes = new_figure(len(corpora), n_points=int(data.groupby("corpus").size().max()))
    logx = wants_log(data["size_mb"], 6)
    logy = wants_log(data["wer_pct"], 15)
    labels: dict[int, list] = {}
    for k, corpus in enumerate(corpora):
        ax = axes[0, k]
        sub = data[data["corpus"] == corpus]
        _draw_points(ax, sub, style, "size_mb", "wer_pct")
        front_keys = set()
        for model, g in sub.groupby("model", sort=True):
            g = g[g["wer_pct"] <= cap_pct]
            if g.empty:
                continue
            mask = pareto_frontier(g["size_mb"].to_numpy(), g["wer_pct"].to_numpy())
            f = g[mask].sort_values(["size_mb", "wer_pct"])
            front_keys |= set(zip(f["model"], f["scheme"], strict=True))
            (line,) = ax.step(
                f["size_mb"],
                f["wer_pct"],
                where="post",
                color="0.3",
                lw=1.1,
                ls=style.linestyle(model),
                alpha=0.8,
                zorder=2,
            )
            line.set_label(f"_pareto-front:{model}")
        if above_cap and (sub["wer_pct"] > cap_pct).any():
            ax.axhline(cap_pct, color="#b22222", ls="--", lw=0.9, alpha=0.7, zorder=1, label="_wer-cap")
        if logx:
            set_log(ax, "x", sub["size_mb"])
        if logy:
            set_log(ax, "y", pd.concat([sub["wer_pct"], sub["lo_pct"], sub["hi_pct"]]))
        style_axes(ax, corpus, axis_label("Artifact size", "MB", logx), axis_label("WER", "%", logy))
        labels[k] = [
            (r.size_mb, r.wer_pct, r.scheme, (r.model, r.scheme) in front_keys) for r in sub.itertuples()
        ]
    handles = style.legend_handles()
    handles += [
        Line2D(
            [],
            [],
            color="0.3",
            ls=style.linestyle(m),
            label=f"Pareto front{f' ({m})' if len(style.models) > 1 else ''}",
        )
        for m in style.models
    ]
    if above_cap:
        handles.append(
            Line2D([], [], color="#b22222", ls="--", label=f"WER {cap_pct:g} %: above = not on the front")
        )
    fig.legend(
        handles=handles, loc="outside right upper", fontsize=8, title="library / model", title_fontsize=8
    )
    fig.suptitle(f"{title}\n({_device_note(data)}; lower left is better)", fontsize=12)
    freeze_layout(fig)
    for k, pts in labels.items():
        label_points(fig, axes[0, k], pts)
    return fig


def wer_vs_bits_figure(df: pd.DataFrame, device: str | None = None) -> Figure:
    """WER (%) against weight bit-width, one line per (library, model), one panel per corpus.

    Where a library has several schemes at one bit-width (group sizes,
    dynamic vs weight-only), all are drawn as points and the line joins the
    best of them.  The fp32 baseline is a dotted horizontal line per model.
    """
    title = "Word error rate vs bit-width"
    data = _one_device(_ok_rows(df), device)
    data = data[np.isfinite(data["bits_eff"])]
    if data.empty:
        return no_data_figure(title)
    style = Style(data)
    corpora = sorted(set(data["corpus"]))
    fig, axes = new_figure(len(corpora))
    bit_ticks = sorted(set(data["bits_eff"]))
    logy = wants_log(data["wer_pct"], 15)
    for k, corpus in enumerate(corpora):
        ax = axes[0, k]
        sub = data[data["corpus"] == corpus]
        # Dodge libraries sideways (a few % in log2 space) so points at one bit-width stay apart.
        libs = [lib for lib in style.libraries if lib != "fp32"]
        dodge = {lib: 2 ** ((j - (len(libs) - 1) / 2) * 0.035) for j, lib in enumerate(libs)}
        quant = sub[sub["library"] != "fp32"]
        # floats even when a corpus has only fp32 rows (an empty column has no numeric dtype)
        quant = quant.assign(bits_x=quant["bits_eff"].astype(float) * quant["library"].map(dodge).astype(float))
        _draw_points(ax, quant, style, "bits_x", "wer_pct")
        for (model, lib), g in quant.groupby(["model", "library"], sort=True):
            best = g.groupby("bits_x")["wer_pct"].min().sort_index()
            ax.plot(best.index, best.to_numpy(), color=style.color(lib), ls=style.linestyle(model), lw=1.2)
        for model, g in sub[sub["library"] == "fp32"].groupby("model", sort=True):
            ax.axhline(
                g["wer_pct"].min(), color="black", ls=BASELINE_LINESTYLE, lw=1, zorder=1, label=f"_baseline:{model}"
            )
            ax.plot(
                g["bits_eff"],
                g["wer_pct"],
                marker=style.marker(model),
                color="black",
                ls="none",
                ms=5.5,
                label=f"_points:{model}:fp32",
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(bit_ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        if logy:
            set_log(ax, "y", pd.concat([sub["wer_pct"], sub["lo_pct"], sub["hi_pct"]]))
        style_axes(ax, corpus, "Weight bit-width (bits, log₂ scale)", axis_label("WER", "%", logy))
    handles = style.legend_handles()
    handles += [
        Line2D([], [], color="0.3", ls=style.linestyle(m), label=f"best per bit-width ({m})")
        for m in style.models
        if len(style.models) > 1
    ]
    handles.append(Line2D([], [], color="black", ls=BASELINE_LINESTYLE, label="fp32 baseline"))
    fig.legend(
        handles=handles, loc="outside right upper", fontsize=8, title="library / model", title_fontsize=8
    )
    fig.suptitle(f"{title}\n({_device_note(data)}; error bars: 95 % bootstrap CI)", fontsize=12)
    return fig


def clean_vs_noisy_figure(
    df: pd.DataFrame, clean_corpus: str, noisy_corpus: str, device: str | None = None
) -> Figure:
    """Per scheme, WER on the clean corpus (x) against the noisy corpus (y), one panel per model.

    Points above the dashed y = x line lose more accuracy under noise than on
    clean speech; error bars are the 95 % intervals on both corpora.
    """
    title = f"Clean ({clean_corpus}) vs noisy ({noisy_corpus}) WER"
    data = _one_device(_ok_rows(df), device)
    keys = ["model", "scheme", "library"]
    clean = data[data["corpus"] == clean_corpus]
    noisy = data[data["corpus"] == noisy_corpus]
    pair = pd.merge(
        clean[[*keys, "wer_pct", "lo_pct", "hi_pct"]],
        noisy[[*keys, "wer_pct", "lo_pct", "hi_pct"]],
        on=keys,
        suffixes=("_c", "_n"),
    )
    if pair.empty:
        return no_data_figure(title, f"no data on both {clean_corpus} and {noisy_corpus}")
    style = Style(pair)
    fig, axes = new_figure(len(style.models), panel=(5.0, 4.6), n_points=int(pair.groupby("model").size().max()))
    log = wants_log(pd.concat([pair["wer_pct_c"], pair["wer_pct_n"]]), 15)
    labels = {}
    for k, model in enumerate(style.models):
        ax = axes[0, k]
        g = pair[pair["model"] == model]
        for lib, h in g.groupby("library", sort=True):
            xe = np.nan_to_num(
                np.vstack([h["wer_pct_c"] - h["lo_pct_c"], h["hi_pct_c"] - h["wer_pct_c"]]).clip(0)
            )
            ye = np.nan_to_num(
                np.vstack([h["wer_pct_n"] - h["lo_pct_n"], h["hi_pct_n"] - h["wer_pct_n"]]).clip(0)
            )
            _errorbar_points(ax, h["wer_pct_c"], h["wer_pct_n"], xe, ye, style, model, lib, elinewidth=0.7,
                             capsize=1.5)
        allv = pd.concat([g["wer_pct_c"], g["wer_pct_n"]]).to_numpy()
        allv = allv[np.isfinite(allv)]
        lo, hi = float(allv.min()), float(allv.max())
        if log:
            set_log(ax, "x", allv)
            set_log(ax, "y", allv)
            span = np.geomspace(max(lo, 1e-3) / 1.5, hi * 1.5, 50)
        else:
            span = np.linspace(0, hi * 1.1, 50)
        ax.plot(span, span, color="0.5", ls="--", lw=1, zorder=1, label="_diagonal")
        style_axes(
            ax,
            model,
            axis_label(f"WER on {clean_corpus}", "%", log),
            axis_label(f"WER on {noisy_corpus}", "%", log),
        )
        labels[k] = [(r.wer_pct_c, r.wer_pct_n, r.scheme, r.library == "fp32") for r in g.itertuples()]
    handles = style.legend_handles(models=False)
    handles.append(Line2D([], [], color="0.5", ls="--", label="y = x (equal WER)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="library", title_fontsize=8)
    fig.suptitle(f"{title} ({_device_note(data)})", fontsize=12)
    freeze_layout(fig)
    for k, pts in labels.items():
        label_points(fig, axes[0, k], pts)
    return fig


def speed_vs_wer_figure(df: pd.DataFrame) -> Figure:
    """WER (%) against the speedup over fp32, one column per device and one row per corpus.

    The speedup is each cell's paired measurement against fp32 in its own job (Hodges-Lehmann
    estimate of the per-pair ratios, evaluate/speed.py), with its 95 % interval as the vertical bar: unlike an
    absolute RTFx, it does not move with the host's drift between cells.  Horizontal bars are
    the WER intervals; the dotted line is fp32's speed; the upper left is fast and accurate.
    When the rows come from several hosts, each panel says so and each label names its host.
    """
    title = "Speed vs word error rate"
    data = _ok_rows(df)
    data = data[np.isfinite(data["speedup_v"]) & (data["speedup_v"] > 0)]
    if data.empty:
        return no_data_figure(title)
    hosts = sorted(set(data["host_s"]))
    style = Style(data)
    devices = sorted(set(data["device"]))
    corpora = sorted(set(data["corpus"]))
    fig, axes = new_figure(
        len(devices),
        len(corpora),
        panel=(5.4, 4.0),
        n_points=int(data.groupby(["corpus", "device"]).size().max()),
    )
    logx = wants_log(data["wer_pct"], 15)
    logy = wants_log(pd.concat([data["speedup_v"], data["speedup_lo"], data["speedup_hi"]]), 8)
    labels = {}
    for i, corpus in enumerate(corpora):
        for j, dev in enumerate(devices):
            ax = axes[i, j]
            sub = data[(data["corpus"] == corpus) & (data["device"] == dev)]
            if sub.empty:
                panel_no_data(ax, f"{corpus} — {dev}")
                continue
            ax.axhline(1.0, color="0.5", lw=0.8, ls=":", zorder=1)
            _draw_points(ax, sub, style, "wer_pct", "speedup_v", xerr=True, yrange=("speedup_lo", "speedup_hi"))
            if logx:
                set_log(ax, "x", pd.concat([sub["wer_pct"], sub["lo_pct"], sub["hi_pct"]]))
            if logy:
                set_log(ax, "y", pd.concat([sub["speedup_v"], sub["speedup_lo"], sub["speedup_hi"]]))
            style_axes(
                ax,
                f"{corpus} — {dev}" + (f" ({len(set(sub['host_s']))} hosts)" if len(hosts) > 1 else ""),
                axis_label("WER", "%", logx),
                axis_label("speedup over fp32", "paired, 95 % CI; higher is faster", logy),
            )
            labels[(i, j)] = [(r.wer_pct, r.speedup_v, r.scheme + (f" @{r.host_s}" if len(hosts) > 1 else ""),
                               r.library == "fp32") for r in sub.itertuples()]
    fig.legend(
        handles=style.legend_handles(),
        loc="outside right upper",
        fontsize=8,
        title="library / model",
        title_fontsize=8,
    )
    where = f"host {hosts[0]}" if len(hosts) == 1 and hosts[0] not in ("", "nan") else f"{len(hosts)} hosts"
    fig.suptitle(f"{title} (upper left = fast and accurate; {where})", fontsize=12)
    freeze_layout(fig)
    for (i, j), pts in labels.items():
        label_points(fig, axes[i, j], pts)
    return fig


plot_size_vs_wer = figure_writer(size_vs_wer_figure)
plot_wer_vs_bits = figure_writer(wer_vs_bits_figure)
plot_clean_vs_noisy = figure_writer(clean_vs_noisy_figure)
plot_speed_vs_wer = figure_writer(speed_vs_wer_figure)
