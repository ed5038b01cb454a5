"""The overlay configurations (``--configfile config/<name>.yaml`` over the default) are valid
as Snakemake merges them, and config/kinds.yaml keeps the breadth the default gave up:
one scheme for every (library, calibrated, compute dtype, bit-width) of the scheme table."""

from __future__ import annotations

import copy

import pytest
import yaml
from workflow_utils import REPO

OVERLAYS = ["full", "kinds", "mixed"]
#: kinds no CPU grid runs: half precision is a GPU's baseline (config/full.yaml says so)
CPU_GRID_SKIPS = {"fp16"}


def _merged(default_config: dict, name: str) -> dict:
    from snakemake.utils import update_config

    cfg = copy.deepcopy(default_config)
    update_config(cfg, yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()))
    return cfg


def _kind(resolved: dict) -> tuple:
    from whisperquant.quantize import get_backend

    params = {k: v for k, v in resolved.items() if k != "library"}
    backend = get_backend(resolved["library"])
    return (resolved["library"], backend.needs_calibration(params), backend.compute_dtype(params, "cpu"),
            backend.bits(params))


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_is_valid_where_snakemake_merges_it(default_config, name):
    from whisperquant.config import check_config, scheme_names, validate_schema

    cfg = validate_schema(_merged(default_config, name))
    schemes = check_config(cfg)
    assert set(scheme_names(cfg)) <= set(schemes)
    assert cfg["grid"] != default_config["grid"]


def test_kinds_grid_has_one_scheme_of_every_kind(default_config):
    from whisperquant.config import resolve_schemes, scheme_names

    resolved = resolve_schemes(default_config)
    every = {_kind(spec) for name, spec in resolved.items()
             if "mixed" not in spec and spec["library"] not in CPU_GRID_SKIPS}
    kinds_cfg = _merged(default_config, "kinds")
    covered = {_kind(resolve_schemes(kinds_cfg)[name]) for name in scheme_names(kinds_cfg)}
    assert every - covered == set(), sorted(every - covered)
    # and the default grid is a subset of it: the default gave up breadth, not kinds of its own
    default = set(scheme_names(default_config))
    assert default <= set(scheme_names(kinds_cfg))
