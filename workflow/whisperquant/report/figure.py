"""The mechanics every report figure shares: an Agg canvas, deterministic PNG + SVG files, log axes.

Figures are built on matplotlib's object API with an explicit Agg canvas -- no
pyplot, so no global figure state, no GUI backend and nothing to close.  Each
figure module defines ``*_figure`` functions that build and return a
:class:`~matplotlib.figure.Figure` (what the tests inspect); :func:`figure_writer`
turns one into the ``plot_*`` function that writes ``<stem>.png`` (150 dpi) and
``<stem>.svg``, byte-identical for the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DPI = 150


def stem_paths(stem: str | Path) -> tuple[Path, Path]:
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    return stem.parent / (stem.name + ".png"), stem.parent / (stem.name + ".svg")


def new_figure(
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


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    png, svg = stem_paths(stem)
    # Fixed SVG ids and no date: the same data gives byte-identical files.
    with mpl.rc_context({"svg.hashsalt": "whisperquant", "svg.fonttype": "path"}):
        fig.savefig(png, dpi=DPI, facecolor="white")
        fig.savefig(svg, facecolor="white", metadata={"Date": None})
    return [png, svg]


def no_data_figure(title: str, message: str = "no data") -> Figure:
    fig = Figure(figsize=(6, 3.5), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=12)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="0.4", transform=ax.transAxes)
    return fig


def panel_no_data(ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.4", fontsize=12, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plain_number(v: float, _pos=None) -> str:
    if v <= 0 or not math.isfinite(v):
        return ""
    return f"{v:.0f}" if v >= 10 else f"{v:.3g}"


def wants_log(values, ratio: float) -> bool:
    """Whether positive ``values`` span more than ``ratio`` (e.g. tiny vs small models, 2-bit WERs)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size >= 2 and v.max() / v.min() > ratio)


def set_log(ax, axis: str, values) -> None:
    """Log axis with ticks at 1-1.5-2-3-5-7 or 1-2-5 steps (by span), printed as plain numbers."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    getattr(ax, f"set_{axis}scale")("log")
    target = ax.xaxis if axis == "x" else ax.yaxis
    span = v.max() / v.min() if v.size else 10.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if span < 30 else (1.0, 2.0, 5.0) if span < 1e3 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(plain_number))
    target.set_minor_formatter(NullFormatter())


def axis_label(text: str, unit: str, log: bool) -> str:
    return f"{text} ({unit}{', log scale' if log else ''})"


def style_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    ax.margins(0.08)
    ax.tick_params(labelsize=8)
    ax.tick_params(which="minor", labelsize=7)


def freeze_layout(fig: Figure) -> None:
    """Run the constrained layout once, then fix it so labels added afterwards cannot move the axes."""
    fig.canvas.draw()
    fig.set_layout_engine("none")


def figure_writer(build: Callable[..., Figure]) -> Callable[..., list[Path]]:
    """``plot(data, stem, *args, **kwargs)``: writes ``build(data, *args, **kwargs)`` to ``<stem>.png`` and
    ``<stem>.svg`` and returns both paths."""

    def plot(data, stem: str | Path, *args, **kwargs) -> list[Path]:
        return save_figure(build(data, *args, **kwargs), stem)

    name = build.__name__.removesuffix("_figure")
    plot.__name__ = plot.__qualname__ = f"plot_{name}"
    plot.__module__ = build.__module__
    plot.__doc__ = f"Write :func:`{build.__name__}` to ``<stem>.png`` and ``<stem>.svg``; returns both paths."
    return plot
