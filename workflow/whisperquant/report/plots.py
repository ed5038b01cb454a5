"""Report figures: size, bit-width, noise robustness and speed against WER.

Every ``plot_*`` function takes the summary table with the columns of
:func:`whisperquant.report.tables.add_statistics` (the interval columns are
optional: without them no error bars are drawn) and an output path stem,
writes ``<stem>.png`` (150 dpi) and ``<stem>.svg`` and returns both paths.
The matching ``*_figure`` function builds and returns the
:class:`~matplotlib.figure.Figure` without writing it (what the tests inspect).
Drawn data carry a label (hidden from legends by its leading underscore):
``_points:<model>:<library>`` on each scatter series, ``_pareto-front:<model>``
on each front line, ``_wer-cap`` on the usable-WER limit,
``_baseline:<model>`` on fp32 reference lines, ``_diagonal`` on y = x.

Figures are built on matplotlib's object API with an explicit Agg canvas --
no pyplot, so no global figure state, no GUI backend and nothing to close.
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
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..evaluate.stats import pareto_frontier
from .tables import LIBRARY_ORDER, PARETO_MAX_WER

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

DPI = 150
LIBRARY_COLORS = {
    "fp32": "#000000",
    "pytorch": "#1f77b4",
    "torchao": "#ff7f0e",
    "quanto": "#2ca02c",
    "hqq": "#d62728",
    "bnb": "#9467bd",
    "ctranslate2": "#8c564b",
    "onnxruntime": "#e377c2",
    "openvino": "#17becf",
}
_EXTRA_COLORS = ("#bcbd22", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a")
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
MODEL_LINESTYLES = ("-", "--", "-.", (0, (6, 1.5, 1, 1.5, 1, 1.5)))
BASELINE_LINESTYLE = ":"
LABEL_FONTSIZE = 6.5


# --------------------------------------------------------------------------- data helpers


def _ordered_libraries(libs) -> list[str]:
    libs = sorted({str(x) for x in libs})
    known = [lib for lib in LIBRARY_ORDER if lib in libs]
    return known + [lib for lib in libs if lib not in LIBRARY_ORDER]


def _library_color(lib: str, extras: list[str]) -> str:
    if lib in LIBRARY_COLORS:
        return LIBRARY_COLORS[lib]
    return _EXTRA_COLORS[extras.index(lib) % len(_EXTRA_COLORS)] if lib in extras else "#7f7f7f"


class _Style:
    """Stable colour per library and marker/line style per model for one figure."""

    def __init__(self, df: pd.DataFrame):
        self.libraries = _ordered_libraries(df["library"]) if len(df) else []
        self.extras = [lib for lib in self.libraries if lib not in LIBRARY_COLORS]
        self.models = sorted({str(m) for m in df["model"]}) if len(df) else []

    def color(self, lib: str) -> str:
        return _library_color(lib, self.extras)

    def marker(self, model: str) -> str:
        return MODEL_MARKERS[self.models.index(model) % len(MODEL_MARKERS)]

    def linestyle(self, model: str) -> str:
        return MODEL_LINESTYLES[self.models.index(model) % len(MODEL_LINESTYLES)]

    def legend_handles(self, libraries: bool = True, models: bool = True) -> list[Line2D]:
        handles: list[Line2D] = []
        if libraries:
            handles += [
                Line2D([], [], color=self.color(lib), marker="o", ls="none", ms=6, label=lib)
                for lib in self.libraries
            ]
        if models and len(self.models) > 1:
            handles += [
                Line2D([], [], color="0.35", marker=self.marker(m), ls="none", ms=6, label=m)
                for m in self.models
            ]
        return handles


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


# --------------------------------------------------------------------------- figure helpers


def _stem_paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem.parent / (stem.name + ".png"), stem.parent / (stem.name + ".svg")


def _figure(
    ncols: int,
    nrows: int = 1,
    panel: tuple[float, float] = (5.6, 4.4),
    legend_w: float = 1.8,
    n_points: int = 0,
):
    """A figure with an Agg canvas; panels grow (up to 1.5x) when they hold many labelled points."""
    grow = min(1.5, max(1.0, math.sqrt(n_points / 30))) if n_points else 1.0
    panel = (panel[0] * grow, panel[1] * grow)
    fig = Figure(figsize=(panel[0] * ncols + legend_w, panel[1] * nrows + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, stem: str | Path) -> list[Path]:
    png, svg = _stem_paths(stem)
    # Fixed SVG ids and no date: the same data gives byte-identical files.
    with mpl.rc_context({"svg.hashsalt": "whisperquant", "svg.fonttype": "path"}):
        fig.savefig(png, dpi=DPI, facecolor="white")
        fig.savefig(svg, facecolor="white", metadata={"Date": None})
    return [png, svg]


def _no_data(title: str, message: str = "no data") -> Figure:
    fig = Figure(figsize=(6, 3.5), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="0.4", transform=ax.transAxes)
    return fig


def _panel_no_data(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.4", fontsize=12, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _plain(v: float, _pos=None) -> str:
    if v <= 0 or not math.isfinite(v):
        return ""
    return f"{v:.0f}" if v >= 10 else f"{v:.3g}"


def _wants_log(values, ratio: float) -> bool:
    """Whether positive ``values`` span more than ``ratio`` (e.g. tiny vs small models, 2-bit WERs)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size >= 2 and v.max() / v.min() > ratio)


def _set_log(ax, axis: str, values) -> None:
    """Log axis with ticks at 1-1.5-2-3-5-7 or 1-2-5 steps (by span), printed as plain numbers."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    span = v.max() / v.min() if v.size else 10.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if span < 30 else (1.0, 2.0, 5.0) if span < 1e3 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(_plain))
    target.set_minor_formatter(NullFormatter())


def _axis_label(text: str, unit: str, log: bool) -> str:
    return f"{text} ({unit}{', log scale' if log else ''})"


def _style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.margins(0.08)
    ax.tick_params(labelsize=8)
    ax.tick_params(which="minor", labelsize=7)


def _freeze_layout(fig: Figure) -> None:
    """Run the constrained layout once, then fix it so labels added afterwards cannot move the axes."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


def _offsets(radii: Sequence[float]) -> list[tuple[float, float, str, str]]:
    """Candidate label offsets in points, (dx, dy, ha, va), nearest first, 8 directions per ring."""
    out = []
    for r in radii:
        for ang in (45, -45, 135, -135, 90, -90, 0, 180):
            c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
            ha = "left" if c > 0.3 else "right" if c < -0.3 else "center"
            va = "bottom" if s > 0.3 else "top" if s < -0.3 else "center"
            out.append((round(r * c, 1), round(r * s, 1), ha, va))
    return out


_NEAR = _offsets((4, 9))
_FAR = _offsets((4, 9, 16, 26, 38))
_LEADER_PT = 12  # labels farther than this from their point get a thin leader line


def _label_points(fig: Figure, ax, points: list[tuple[float, float, str, bool]]) -> None:
    """Greedy label placement: each label takes the first nearby spot that overlaps nothing.

    ``points`` are (x, y, text, priority).  Priority labels (e.g. the Pareto
    front) are placed first, may move farther away (with a leader line) and
    are always drawn, at the least crowded spot if none is free; other labels
    that find no free spot close by are left out and the panel says how many.
    Boxes are computed arithmetically from the text extent, so placing
    hundreds of labels stays fast.
    """
    if not points:
        return
    renderer = fig.canvas.get_renderer()
    props = {
        False: FontProperties(size=LABEL_FONTSIZE),
        True: FontProperties(size=LABEL_FONTSIZE, weight="bold"),
    }
    px_per_pt = fig.dpi / 72.0
    xy = ax.transData.transform(np.array([(p[0], p[1]) for p in points], dtype=float))
    axbox = ax.get_window_extent(renderer)
    r = 3.5 * px_per_pt  # marker half-size
    markers = np.column_stack([xy[:, 0] - r, xy[:, 1] - r, xy[:, 0] + r, xy[:, 1] + r])
    placed = np.empty((0, 4))
    order = sorted(range(len(points)), key=lambda i: (not points[i][3], xy[i, 0], xy[i, 1]))
    hidden = 0
    pad = 1.0 * px_per_pt
    for i in order:
        x0, y0 = xy[i]
        text, priority = points[i][2], points[i][3]
        w, h, _ = renderer.get_text_width_height_descent(text, props[priority], ismath=False)
        best, best_score = None, math.inf
        others = np.vstack([placed, np.delete(markers, i, axis=0)])
        for dx, dy, ha, va in _FAR if priority else _NEAR:
            cx, cy = x0 + dx * px_per_pt, y0 + dy * px_per_pt
            left = cx - (w if ha == "right" else w / 2 if ha == "center" else 0)
            bottom = cy - (h if va == "top" else h / 2 if va == "center" else 0)
            box = np.array([left - pad, bottom - pad, left + w + pad, bottom + h + pad])
            outside = box[0] < axbox.x0 or box[2] > axbox.x1 or box[1] < axbox.y0 or box[3] > axbox.y1
            overl = (
                (others[:, 0] < box[2])
                & (others[:, 2] > box[0])
                & (others[:, 1] < box[3])
                & (others[:, 3] > box[1])
            )
            score = int(overl.sum()) + (100 if outside else 0)
            if score < best_score:
                best, best_score = (dx, dy, ha, va, box), score
            if score == 0:
                break
        if best is None or (best_score > 0 and not priority):
            hidden += 1
            continue
        dx, dy, ha, va, box = best
        far = math.hypot(dx, dy) > _LEADER_PT
        ax.annotate(
            text,
            (points[i][0], points[i][1]),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=LABEL_FONTSIZE,
            color="0.1" if priority else "0.3",
            fontweight="bold" if priority else "normal",
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5, "shrinkA": 0, "shrinkB": 3}
            if far
            else None,
        )
        placed = np.vstack([placed, box])
    if hidden:
        ax.text(
            0.99,
            0.01,
            f"{hidden} label(s) hidden to avoid overlap",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=6,
            color="0.45",
        )


def _device_note(df: pd.DataFrame) -> str:
    devs = sorted(set(df["device"]))
    return f"device: {', '.join(devs)}" if devs else ""


def _draw_points(ax, sub: pd.DataFrame, style: _Style, x: str, y: str, xerr=False, yerr=True,
                 yrange: tuple[str, str] | None = None) -> None:
    """Scatter ``sub`` by (model, library) with optional error bars: the WER CI on the axis
    showing WER (``xerr``/``yerr``), or the columns ``yrange`` (low, high) on y."""
    for (model, lib), g in sub.groupby(["model", "library"], sort=True):
        ye = _yerr(g, y, *yrange) if yrange else _yerr(g) if yerr else None
        xe = _yerr(g) if xerr else None
        _errorbar_points(ax, g[x], g[y], xe, ye, style, model, lib, elinewidth=0.8, capsize=2)


def _errorbar_points(ax, xs, ys, xerr, yerr, style: _Style, model: str, lib: str, elinewidth: float,
                     capsize: float) -> None:
    """One (model, library) series of points with error bars, labelled for the figure tests."""
    bars = ax.errorbar(xs, ys, yerr=yerr, xerr=xerr, fmt=style.marker(model), color=style.color(lib), ms=5.5,
                       mec="white", mew=0.5, ecolor=style.color(lib), elinewidth=elinewidth, capsize=capsize,
                       alpha=0.9, ls="none", zorder=3)
    bars.lines[0].set_label(f"_points:{model}:{lib}")


# --------------------------------------------------------------------------- plots


def plot_size_vs_wer(
    df: pd.DataFrame, stem: str | Path, device: str | None = None, max_wer: float | None = PARETO_MAX_WER
) -> list[Path]:
    """Write :func:`size_vs_wer_figure` to ``<stem>.png`` and ``<stem>.svg``."""
    return _save(size_vs_wer_figure(df, device, max_wer), stem)


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
        return _no_data(title)
    cap_pct = math.inf if max_wer is None else 100.0 * float(max_wer)
    above_cap = bool((data["wer_pct"] > cap_pct).any())
    style = _Style(data)
    corpora = sorted(set(data["corpus"]))
    fig, axes = _figure(len(corpora), n_points=int(data.groupby("corpus").size().max()))
    logx = _wants_log(data["size_mb"], 6)
    logy = _wants_log(data["wer_pct"], 15)
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
            _set_log(ax, "x", sub["size_mb"])
        if logy:
            _set_log(ax, "y", pd.concat([sub["wer_pct"], sub["lo_pct"], sub["hi_pct"]]))
        _style_axes(ax, corpus, _axis_label("Artifact size", "MB", logx), _axis_label("WER", "%", logy))
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
    _freeze_layout(fig)
    for k, pts in labels.items():
        _label_points(fig, axes[0, k], pts)
    return fig


def plot_wer_vs_bits(df: pd.DataFrame, stem: str | Path, device: str | None = None) -> list[Path]:
    """Write :func:`wer_vs_bits_figure` to ``<stem>.png`` and ``<stem>.svg``."""
    return _save(wer_vs_bits_figure(df, device), stem)


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
        return _no_data(title)
    style = _Style(data)
    corpora = sorted(set(data["corpus"]))
    fig, axes = _figure(len(corpora))
    bit_ticks = sorted(set(data["bits_eff"]))
    logy = _wants_log(data["wer_pct"], 15)
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
            _set_log(ax, "y", pd.concat([sub["wer_pct"], sub["lo_pct"], sub["hi_pct"]]))
        _style_axes(ax, corpus, "Weight bit-width (bits, log₂ scale)", _axis_label("WER", "%", logy))
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


def plot_clean_vs_noisy(
    df: pd.DataFrame, stem: str | Path, clean_corpus: str, noisy_corpus: str, device: str | None = None
) -> list[Path]:
    """Write :func:`clean_vs_noisy_figure` to ``<stem>.png`` and ``<stem>.svg``."""
    return _save(clean_vs_noisy_figure(df, clean_corpus, noisy_corpus, device), stem)


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
        return _no_data(title, f"no data on both {clean_corpus} and {noisy_corpus}")
    style = _Style(pair)
    fig, axes = _figure(len(style.models), panel=(5.0, 4.6), n_points=int(pair.groupby("model").size().max()))
    log = _wants_log(pd.concat([pair["wer_pct_c"], pair["wer_pct_n"]]), 15)
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
            _set_log(ax, "x", allv)
            _set_log(ax, "y", allv)
            span = np.geomspace(max(lo, 1e-3) / 1.5, hi * 1.5, 50)
        else:
            span = np.linspace(0, hi * 1.1, 50)
        ax.plot(span, span, color="0.5", ls="--", lw=1, zorder=1, label="_diagonal")
        _style_axes(
            ax,
            model,
            _axis_label(f"WER on {clean_corpus}", "%", log),
            _axis_label(f"WER on {noisy_corpus}", "%", log),
        )
        labels[k] = [(r.wer_pct_c, r.wer_pct_n, r.scheme, r.library == "fp32") for r in g.itertuples()]
    handles = style.legend_handles(models=False)
    handles.append(Line2D([], [], color="0.5", ls="--", label="y = x (equal WER)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="library", title_fontsize=8)
    fig.suptitle(f"{title} ({_device_note(data)})", fontsize=12)
    _freeze_layout(fig)
    for k, pts in labels.items():
        _label_points(fig, axes[0, k], pts)
    return fig


def plot_speed_vs_wer(df: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Write :func:`speed_vs_wer_figure` to ``<stem>.png`` and ``<stem>.svg``."""
    return _save(speed_vs_wer_figure(df), stem)


def speed_vs_wer_figure(df: pd.DataFrame) -> Figure:
    """WER (%) against the speedup over fp32, one column per device and one row per corpus.

    The speedup is each cell's paired measurement against fp32 in its own job (median of the
    per-pair ratios, evaluate/speed.py), with its 95 % interval as the vertical bar: unlike an
    absolute RTFx, it does not move with the host's drift between cells.  Horizontal bars are
    the WER intervals; the dotted line is fp32's speed; the upper left is fast and accurate.
    When the rows come from several hosts, each panel says so and each label names its host.
    """
    title = "Speed vs word error rate"
    data = _ok_rows(df)
    data = data[np.isfinite(data["speedup_v"]) & (data["speedup_v"] > 0)]
    if data.empty:
        return _no_data(title)
    hosts = sorted(set(data["host_s"]))
    style = _Style(data)
    devices = sorted(set(data["device"]))
    corpora = sorted(set(data["corpus"]))
    fig, axes = _figure(
        len(devices),
        len(corpora),
        panel=(5.4, 4.0),
        n_points=int(data.groupby(["corpus", "device"]).size().max()),
    )
    logx = _wants_log(data["wer_pct"], 15)
    logy = _wants_log(pd.concat([data["speedup_v"], data["speedup_lo"], data["speedup_hi"]]), 8)
    labels = {}
    for i, corpus in enumerate(corpora):
        for j, dev in enumerate(devices):
            ax = axes[i, j]
            sub = data[(data["corpus"] == corpus) & (data["device"] == dev)]
            if sub.empty:
                _panel_no_data(ax, f"{corpus} — {dev}")
                continue
            ax.axhline(1.0, color="0.5", lw=0.8, ls=":", zorder=1)
            _draw_points(ax, sub, style, "wer_pct", "speedup_v", xerr=True, yrange=("speedup_lo", "speedup_hi"))
            if logx:
                _set_log(ax, "x", pd.concat([sub["wer_pct"], sub["lo_pct"], sub["hi_pct"]]))
            if logy:
                _set_log(ax, "y", pd.concat([sub["speedup_v"], sub["speedup_lo"], sub["speedup_hi"]]))
            _style_axes(
                ax,
                f"{corpus} — {dev}" + (f" ({len(set(sub['host_s']))} hosts)" if len(hosts) > 1 else ""),
                _axis_label("WER", "%", logx),
                _axis_label("speedup over fp32", "paired, 95 % CI; higher is faster", logy),
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
    _freeze_layout(fig)
    for (i, j), pts in labels.items():
        _label_points(fig, axes[i, j], pts)
    return fig


def plot_sensitivity(rows: pd.DataFrame, stem: str | Path, title: str) -> list[Path]:
    """Write :func:`sensitivity_figure` to ``<stem>.png`` and ``<stem>.svg``."""
    return _save(sensitivity_figure(rows, title), stem)


def sensitivity_figure(rows: pd.DataFrame, title: str) -> Figure:
    """Per-layer damage (KL of the next-token distribution, log scale) in model order, one panel per stack.

    Bars are coloured by the kind of Linear (attention projections, cross-attention, FFN); the
    five most damaging layers of the whole model are labelled.
    """
    data = rows.copy()
    data["kl"] = pd.to_numeric(data.get("kl"), errors="coerce")
    data = data[np.isfinite(data["kl"])]
    if data.empty:
        return _no_data(title)
    stacks = [s for s in ("encoder", "decoder", "other") if (data["stack"] == s).any()]
    widest = max(int((data["stack"] == s).sum()) for s in stacks)
    fig, axes = _figure(1, len(stacks), panel=(max(6.0, 0.13 * widest), 2.8), legend_w=0.0)
    data["group"] = data["kind"].astype(str).str.split(".").str[0]  # self_attn, encoder_attn, fc1, fc2
    palette = dict(zip(sorted(set(data["group"])), ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                    "#8c564b"], strict=False))
    top = set(data.nlargest(5, "kl")["module"])
    floor = max(data["kl"][data["kl"] > 0].min() / 2, 1e-9) if (data["kl"] > 0).any() else 1e-9
    for ax, stack in zip(axes[:, 0], stacks, strict=True):
        sub = data[data["stack"] == stack].sort_values("order")
        x = np.arange(len(sub))
        ax.bar(x, sub["kl"].clip(lower=floor), color=[palette.get(g, "#7f7f7f") for g in sub["group"]], width=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, [f"{layer}.{kind}" for layer, kind in zip(sub["layer"], sub["kind"], strict=True)],
                      rotation=90, fontsize=5)
        for xi, (module, kl) in enumerate(zip(sub["module"], sub["kl"], strict=True)):
            if module in top:
                ax.annotate("top 5", (xi, kl), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=6)
        ax.set_ylabel("KL to fp32 (nats, log)")
        ax.set_title(f"{title} — {stack} ({len(sub)} Linears, model order)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], color=c, lw=6, label=k) for k, c in palette.items()]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="upper right", frameon=False)
    return fig
