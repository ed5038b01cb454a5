"""Point labels that do not overlap: a greedy placer for the scheme names on the report's scatter plots."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

LABEL_FONTSIZE = 6.5


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


def label_points(fig: Figure, ax, points: list[tuple[float, float, str, bool]]) -> None:
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
