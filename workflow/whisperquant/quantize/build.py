"""Build one scheme's artifact: plan its per-layer formats (a ``mixed:`` block), quantise or convert, size.

What the quantize job (:func:`whisperquant.jobs.quantize_job`) calls between reading its inputs
and writing the record: :func:`build_artifact` fills the record's facts (sizes, the plan, the
time it took), and a budget scheme whose artifact came out over its budget is planned again
with the bytes the allocator's byte model missed taken off the budget.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..records import read_json
from . import mixed
from .linear_swap import WEIGHTS
from .modules import architecture, linear_names, target_linears

if TYPE_CHECKING:
    from .base import Backend

log = logging.getLogger("whisperquant")

#: How often a budget scheme is planned before its budget counts as not met.
BUDGET_ATTEMPTS = 4


def mixed_planner(model_dir: str | Path, backend: Backend, params: dict, sensitivity_csv: str | Path
                  ) -> Callable[[float], tuple[dict, dict]]:
    """The planner of a scheme's ``mixed:`` block (:mod:`.mixed`): ``plan(overshoot)`` gives
    (facts for the quantize record, the library's parameters for the plan).

    The table, the architecture and the fixed bytes are read once; a budget scheme is planned
    again with ``overshoot`` (bytes the byte model missed on the previous plan) off its budget.
    """
    spec = params["mixed"]
    arch = architecture(Path(model_dir))
    targets = target_linears(arch, params["targets"])
    numel = {m: arch.get_submodule(m).weight.numel() for m in targets}
    with open(sensitivity_csv, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))

    def layer_bytes(m: str, w) -> float:
        return backend.weight_bytes(params, numel[m], w)

    if "budget_mb" in spec:
        facts_file = Path(sensitivity_csv).with_suffix(".json")
        facts = read_json(facts_file)
        if "bits" not in facts:
            raise ValueError(f"{facts_file}: no 'bits' (the width the layers were measured at); "
                             "rerun the sensitivity rule")
        # everything but the target Linears' weights, as the fp32 checkpoint stores it
        fixed = Path(model_dir, WEIGHTS).stat().st_size - sum(layer_bytes(m, mixed.FLOAT) for m in targets)

    def plan(overshoot: float = 0.0) -> tuple[dict, dict]:
        if "keep" in spec:
            chosen = mixed.rule_plan(table, targets, spec["keep"], spec.get("keep_bits", mixed.FLOAT),
                                     params.get("bits", backend.bits(params)))
            info = {}
        else:
            try:
                chosen = mixed.budget_plan(table, targets, float(facts["bits"]), spec["choices"],
                                           spec["budget_mb"] * 1e6 - overshoot, fixed, layer_bytes)
            except ValueError as e:
                raise ValueError(f"{e} (sensitivity table of {spec['sensitivity']})") from None
            info = {"estimated_bytes": round(fixed + sum(layer_bytes(m, w) for m, w in chosen.items()))}
        resolved = mixed.resolved_params(params, chosen, backend.bits(params))
        return {**info, "sensitivity": spec["sensitivity"], "widths": mixed.summary(chosen),
                "mean_bits": round(mixed.mean_bits(chosen, numel), 4), "plan": chosen}, resolved

    return plan


def build_artifact(record: dict, backend: Backend, model_dir: Path, scheme: str, params: dict, calibration,
                   out_dir: Path, sensitivity_csv: str | Path | None = None, graphs: Path | None = None) -> None:
    """Make the artifact of ``params`` in the empty ``out_dir`` and add its facts to ``record``.

    ``record`` gains ``quantize_s``, ``status: ok``, ``quantized_modules`` and the sizes
    (:meth:`~whisperquant.quantize.base.Backend.sizes`); a scheme with a ``mixed:`` block also
    ``mixed`` (the plan, its estimate, the attempts), ``resolved_params``, ``bits`` and ``method``
    of the plan.  A :class:`~whisperquant.quantize.errors.LibraryLimitation` of the library
    propagates with ``record`` holding the plan it was raised on.  A budget not met after
    :data:`BUDGET_ATTEMPTS` plans is a ValueError naming ``schemes.<scheme>.mixed.budget_mb``.
    ``graphs``: the model's exported fp32 graphs, for a backend that builds from them
    (:attr:`~whisperquant.quantize.base.Backend.uses_graphs`; without them it exports its own).
    """
    config_params = params
    budget = (params.get("mixed") or {}).get("budget_mb")
    planner = mixed_planner(model_dir, backend, params, sensitivity_csv) if "mixed" in params else None
    overshoot = 0.0
    for attempt in range(1, BUDGET_ATTEMPTS + 1):
        if planner is not None:
            info, params = planner(overshoot)
            record.update(mixed={**info, "attempts": attempt}, resolved_params=params, bits=info["mean_bits"],
                          method=f"{backend.method(config_params)}; mixed from {info['sensitivity']}'s "
                                 "sensitivity: " + ", ".join(f"{n}x {w}" for w, n in info["widths"].items()))
        t0 = time.perf_counter()
        extra = {"graphs": graphs} if backend.uses_graphs else {}
        backend.build(model_dir, params, calibration, out_dir, **extra)  # quantise and save, or an engine's conversion
        record["quantize_s"] = round(time.perf_counter() - t0, 3)
        names, _ = linear_names(model_dir, params["targets"])
        record.update(status="ok", quantized_modules=len(names), **backend.sizes(out_dir, names))
        if budget is None or record["artifact_bytes"] <= budget * 1e6:
            return
        # The allocator's byte model leaves out the file's per-tensor header entries and padding:
        # plan again with the budget lowered by what the model missed on this plan.
        overshoot = max(overshoot, record["artifact_bytes"] - record["mixed"]["estimated_bytes"])
        log.info("plan %d: %d bytes over the %.3f MB budget; planning again", attempt,
                 record["artifact_bytes"] - budget * 1e6, budget)
        shutil.rmtree(out_dir)
        out_dir.mkdir()
    raise ValueError(f"schemes.{scheme}.mixed.budget_mb: {budget} MB not met after {BUDGET_ATTEMPTS} plans "
                     f"(last artifact {record['artifact_bytes'] / 1e6:.3f} MB)")
