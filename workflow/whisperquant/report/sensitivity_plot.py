"""The sensitivity stage's figure: each target Linear's damage when it alone is quantised."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .figure import figure_writer, new_figure, no_data_figure


def sensitivity_figure(rows: pd.DataFrame, title: str) -> Figure:
    """Per-layer damage (KL of the next-token distribution, log scale) in model order, one panel per stack.

    Bars are coloured by the kind of Linear (attention projections, cross-attention, FFN); the
    five most damaging layers of the whole model are labelled.
    """
    data = rows.copy()
    data["kl"] = pd.to_numeric(data.get("kl"), errors="coerce")
    data = data[np.isfinite(data["kl"])]
    if data.empty:
        return no_data_figure(title)
    stacks = [s for s in ("encoder", "decoder", "other") if (data["stack"] == s).any()]
    widest = max(int((data["stack"] == s).sum()) for s in stacks)
    fig, axes = new_figure(1, len(stacks), panel=(max(6.0, 0.13 * widest), 2.8), legend_w=0.0)
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


plot_sensitivity = figure_writer(sensitivity_figure)
