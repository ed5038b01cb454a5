"""Mixed precision: each target Linear's format chosen from a layer-sensitivity table.

A scheme with a ``mixed:`` block is an ordinary scheme of its library (its
``bits`` and other parameters are the default format) whose per-layer formats
are decided when it is quantised, from the table the ``sensitivity`` rule
wrote for the same model (``results/report/sensitivity/<model>/<scheme>.csv``):

- **rule** (``keep: k``): the ``k`` layers with the largest damage (``kl``) get
  ``keep_bits`` (a bit-width of the library, or ``float``: the layer is left
  unquantised); every other target keeps the scheme's format.
- **budget** (``budget_mb: B``): the allocator picks each layer's width from
  ``choices`` so that the artifact fits in ``B`` MB (10^6 bytes) with the least
  predicted damage.  It is the greedy form of bit allocation by sensitivity
  (the idea of HAWQ-V3's and BAQ's allocation: spend bits where the measured
  sensitivity per byte is highest), with the classical high-resolution model
  of quantisation noise to carry one measured width to the others: noise power
  falls by 4x per added bit, so a layer measured at ``b0`` bits with damage
  ``d`` is predicted to cause ``d * 4**(b0 - b)`` at ``b`` bits (0 in float).
  Starting from every layer at the narrowest choice, it repeatedly takes the
  one-step widening with the largest predicted damage saved per added byte
  that still fits, until none fits.

The plan (layer -> bits or float) is written into the artifact's record (``<scheme>.json`` beside it)
and ``quantization.json``; ``resolved_params`` turns it into the library's own
parameters (``targets`` narrowed to the quantised layers, ``layer_bits`` for
the layers whose width differs), so loading needs nothing but the artifact.
Pure functions: tested without a model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

from .errors import SchemeError

FLOAT = "float"
KEYS = ("sensitivity", "keep", "keep_bits", "budget_mb", "choices")


def check_spec(scheme: str, spec: Mapping, allowed_bits: Sequence[int] | None) -> None:
    """Configuration-time checks of a ``mixed:`` block (``schemes.<scheme>.mixed.<key>`` in every message)."""
    where = f"schemes.{scheme}.mixed"
    for key in spec:
        if key not in KEYS:
            raise SchemeError(f"{where}.{key}: unknown key; valid: {', '.join(KEYS)}")
    if "sensitivity" not in spec:
        raise SchemeError(f"{where}.sensitivity: name the scheme whose sensitivity table ranks the layers")
    if ("keep" in spec) == ("budget_mb" in spec):
        raise SchemeError(f"{where}: give exactly one of keep (a rule: the k most sensitive layers) "
                          "and budget_mb (the allocator)")
    widths = [*(allowed_bits or ()), FLOAT]
    if "keep" in spec:
        if not isinstance(spec["keep"], int) or spec["keep"] < 1:
            raise SchemeError(f"{where}.keep: expected a positive integer, got {spec['keep']!r}")
        if spec.get("keep_bits", FLOAT) not in widths:
            raise SchemeError(f"{where}.keep_bits: {spec['keep_bits']!r} is not offered; valid: "
                              f"{', '.join(map(str, widths))}")
        if "choices" in spec:
            raise SchemeError(f"{where}.choices: only the allocator (budget_mb) chooses among widths")
    else:
        if "keep_bits" in spec:
            raise SchemeError(f"{where}.keep_bits: only the rule (keep) keeps layers at one width")
        if not isinstance(spec["budget_mb"], (int, float)) or spec["budget_mb"] <= 0:
            raise SchemeError(f"{where}.budget_mb: expected a positive number of MB, got {spec['budget_mb']!r}")
        choices = spec.get("choices")
        if not choices or len(choices) < 2:
            raise SchemeError(f"{where}.choices: list at least two widths to choose from, e.g. [2, 4, 8]")
        for c in choices:
            if c not in widths or (c != FLOAT and allowed_bits is None):
                raise SchemeError(f"{where}.choices: {c!r} is not offered; valid: {', '.join(map(str, widths))}")


def rule_plan(table: Sequence[Mapping], targets: Sequence[str], keep: int, keep_bits, bits: float
              ) -> dict[str, object]:
    """The ``keep`` most damaging layers (by ``kl``) at ``keep_bits``, the others at the scheme's ``bits``."""
    damage = _damage(table, targets)
    ranked = sorted(targets, key=lambda m: (-damage[m], targets.index(m)))
    kept = set(ranked[:keep])
    return {m: (keep_bits if m in kept else bits) for m in targets}


def budget_plan(table: Sequence[Mapping], targets: Sequence[str], reference_bits: float, choices: Sequence,
                budget_bytes: float, fixed_bytes: float, layer_bytes: Callable[[str, object], float]
                ) -> dict[str, object]:
    """Greedy allocation of ``choices`` under ``budget_bytes`` (see the module docstring).

    ``fixed_bytes`` is what the artifact holds besides the target Linears' weights;
    ``layer_bytes(module, width)`` the bytes one layer's weight takes at ``width``.
    Raises ValueError naming the smallest possible size when even that does not fit.
    """
    damage = _damage(table, targets)
    order = sorted(choices, key=_width)

    def predicted(m: str, w) -> float:
        return 0.0 if w == FLOAT else damage[m] * 4.0 ** (reference_bits - _width(w))

    level = dict.fromkeys(targets, 0)
    total = fixed_bytes + sum(layer_bytes(m, order[0]) for m in targets)
    if total > budget_bytes:
        raise ValueError(f"mixed.budget_mb: {budget_bytes / 1e6:.2f} MB is below the smallest plan "
                         f"(every layer at {order[0]}: {total / 1e6:.2f} MB)")
    while True:
        best, best_gain = None, -1.0
        for m in targets:
            if level[m] + 1 >= len(order):
                continue
            cur, nxt = order[level[m]], order[level[m] + 1]
            extra = layer_bytes(m, nxt) - layer_bytes(m, cur)
            if total + extra > budget_bytes:
                continue
            gain = (predicted(m, cur) - predicted(m, nxt)) / max(extra, 1.0)
            if gain > best_gain:  # ties: the first in model order, so the plan is deterministic
                best, best_gain = m, gain
        if best is None:
            break
        total += layer_bytes(best, order[level[best] + 1]) - layer_bytes(best, order[level[best]])
        level[best] += 1
    return {m: order[level[m]] for m in targets}


def resolved_params(params: Mapping, plan: Mapping[str, object], default_bits: float) -> dict:
    """The library's own parameters for ``plan``: float layers dropped from ``targets``, the layers whose
    width is not the scheme's own ``default_bits`` listed in ``layer_bits``."""
    quantized = [m for m, w in plan.items() if w != FLOAT]
    if not quantized:
        raise ValueError("mixed: the plan keeps every layer in float; nothing is quantised")
    out = {k: v for k, v in params.items() if k != "mixed"}
    out["targets"] = "^(" + "|".join(re.escape(m) for m in quantized) + ")$"
    differ = {m: w for m, w in plan.items() if w != FLOAT and w != default_bits}
    if differ:
        out["layer_bits"] = dict(sorted(differ.items()))
    return out


def mean_bits(plan: Mapping[str, object], numel: Mapping[str, int]) -> float:
    """Weight bits per target weight, float layers counted at 32."""
    total = sum(numel[m] for m in plan)
    return sum(numel[m] * (32 if w == FLOAT else _width(w)) for m, w in plan.items()) / total


def summary(plan: Mapping[str, object]) -> dict[str, int]:
    """How many layers got each width, widest first (for the quantize record and the method column)."""
    counts: dict[str, int] = {}
    for w in sorted(plan.values(), key=_width, reverse=True):
        label = FLOAT if w == FLOAT else f"{float(w):g}"
        counts[label] = counts.get(label, 0) + 1
    return counts


def _width(w) -> float:
    return math.inf if w == FLOAT else float(w)


def _damage(table: Sequence[Mapping], targets: Sequence[str]) -> dict[str, float]:
    by_module = {row["module"]: float(row["kl"]) for row in table}
    missing = [m for m in targets if m not in by_module]
    if missing:
        raise ValueError(f"the sensitivity table has no row for {len(missing)} target layer(s), e.g. {missing[0]}; "
                         "was it made with the same targets?")
    bad = [m for m in targets if not math.isfinite(by_module[m])]
    if bad:
        raise ValueError(f"the sensitivity table's kl is not finite for {bad[0]}")
    return {m: by_module[m] for m in targets}
