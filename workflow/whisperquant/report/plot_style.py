"""One look across the report's figures: a stable colour per library, a marker and line style per model."""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from .order import LIBRARY_ORDER

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


def ordered_libraries(libs) -> list[str]:
    libs = sorted({str(x) for x in libs})
    known = [lib for lib in LIBRARY_ORDER if lib in libs]
    return known + [lib for lib in libs if lib not in LIBRARY_ORDER]


def library_color(lib: str, extras: list[str]) -> str:
    if lib in LIBRARY_COLORS:
        return LIBRARY_COLORS[lib]
    return _EXTRA_COLORS[extras.index(lib) % len(_EXTRA_COLORS)] if lib in extras else "#7f7f7f"


class Style:
    """Stable colour per library and marker/line style per model for one figure."""

    def __init__(self, df: pd.DataFrame):
        self.libraries = ordered_libraries(df["library"]) if len(df) else []
        self.extras = [lib for lib in self.libraries if lib not in LIBRARY_COLORS]
        self.models = sorted({str(m) for m in df["model"]}) if len(df) else []

    def color(self, lib: str) -> str:
        return library_color(lib, self.extras)

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
