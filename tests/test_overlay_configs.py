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


def test_the_suites_runs_carry_the_test_configs_cells(default_config, download_cache):
    """CI plans .test/'s configs the workflow catalog's way (``--directory .test``) and builds only their model
    and corpora there: their cells run in the suite.  The basic config's are the session's finished small run's
    (workflow_utils.small_config); the calibrated config adds one calibrated PyTorch static scheme, a kind the
    session's wide run carries."""
    from whisperquant.config import cells, check_config, validate_schema
    from whisperquant.quantize import get_backend
    from workflow_utils import small_config, wide_config

    def planned(cfg: dict) -> tuple[dict, dict]:
        """The runnable cells with their resolved schemes, and the config with the schema's defaults."""
        cfg = validate_schema(copy.deepcopy(cfg))
        schemes = check_config(cfg)
        return {c: schemes[c.scheme] for c in cells(cfg, schemes)[0]}, cfg

    def kind(spec: dict) -> tuple:
        params = {k: v for k, v in spec.items() if k != "library"}
        return spec["library"], spec.get("mode"), get_backend(spec["library"]).needs_calibration(params)

    basic, basic_cfg = planned(yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text()))
    suite, suite_cfg = planned(small_config(default_config, download_cache))
    assert basic == suite
    assert basic_cfg["models"] == suite_cfg["models"]
    # the same transcription settings; the suite's threads are its worker's share of the machine (workflow_utils)
    assert {**basic_cfg["transcription"], "threads": None} == {**suite_cfg["transcription"], "threads": None}
    assert basic_cfg["corpora"]["clean"] == suite_cfg["corpora"]["clean"]
    calibrated, _ = planned(yaml.safe_load((REPO / ".test" / "config-calibrated" / "config.yaml").read_text()))
    assert set(basic) < set(calibrated)
    (extra,) = [spec for cell, spec in calibrated.items() if cell not in basic]
    assert kind(extra) == ("pytorch", "static", True)
    wide_schemes, _ = planned(wide_config(default_config, download_cache))
    assert kind(extra) in {kind(spec) for spec in wide_schemes.values()}
