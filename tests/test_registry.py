"""The backend registry is lazy, and a library can be added from outside the package.

Planning the DAG must not import torch or any quantisation library: every
SLURM job re-parses the Snakefile, and ``snakemake -n`` should answer in about
a second.  A toy backend defined in this test module (nothing in the package
changes) is validated, resolved and planned like a built-in one.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from conftest import REPO
from whisperquant.config import ConfigError, cells, check_config, validate_schema
from whisperquant.quantize import ModuleBackend, SchemeError, get_backend, libraries, register
from whisperquant.quantize.registry import unregister

HEAVY = ("torch", "transformers", "hqq", "optimum", "bitsandbytes", "torchao")


def _imported_heavy(code: str) -> list[str]:
    """Top-level heavy packages imported by running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO / "workflow", capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    return eval(out)  # a printed list of names


def test_resolving_every_builtin_scheme_imports_no_library():
    code = (
        "import yaml\n"
        "from snakemake.utils import update_config\n"
        "from whisperquant.config import validate_schema, check_config, cells\n"
        "cfg = yaml.safe_load(open('../config/config.yaml'))\n"
        "update_config(cfg, yaml.safe_load(open('../config/paper.yaml')))  # as --configfile does\n"
        "validate_schema(cfg); schemes = check_config(cfg); runnable, unsupported = cells(cfg, schemes)\n"
        "assert len(schemes) >= 30 and runnable and unsupported\n"
    )
    assert _imported_heavy(code) == []


def test_snakemake_dry_run_of_the_study_config_imports_no_torch():
    from workflow_utils import paper_dry_run

    proc = paper_dry_run()  # python -X importtime -m snakemake -n --configfile config/paper.yaml
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "snakemake" in imported  # the probe itself works
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_get_backend_imports_only_that_library():
    assert _imported_heavy("from whisperquant.quantize import get_backend\nget_backend('hqq').bits({'bits': 4})") \
        == []
    assert "torch" in _imported_heavy(
        "from whisperquant.quantize.backends.hqq import HQQ\nHQQ()._compute_dtype('cpu')")


def test_unknown_library_names_the_valid_ones():
    valid = "bnb, ctranslate2, fp16, fp32, hqq, onnxruntime, openvino, pt2e, pytorch, quanto, torchao"
    with pytest.raises(SchemeError, match=f"unknown library 'nope'; valid: {valid}"):
        get_backend("nope")


@pytest.fixture
def toy_backend():
    @register
    class Toy(ModuleBackend):
        """A library that rounds weights to a grid of ``levels`` values (test only)."""

        library = "toy"
        parameters = {"levels": ((16, 256), 256)}

        def bits(self, params):
            return 4.0 if params["levels"] == 16 else 8.0

        def method(self, params):
            return f"{params['levels']} levels, weight-only"

        def save(self, model, params, out_dir):  # pragma: no cover - not run here
            raise NotImplementedError

        def load(self, base_model_dir, params, artifact_dir, device):  # pragma: no cover
            raise NotImplementedError

    yield Toy
    unregister("toy")


def test_a_backend_registered_from_a_test_module_is_planned_like_a_builtin(toy_backend, default_config):
    assert "toy" in libraries()
    assert isinstance(get_backend("toy"), toy_backend)
    cfg = copy.deepcopy(default_config)
    cfg["schemes"]["toy-4"] = {"library": "toy", "levels": 16}
    cfg["grid"] = {"models": ["tiny.en"], "schemes": ["fp32", "toy-4"], "devices": ["cpu", "cuda"],
                   "corpora": ["clean"]}
    validate_schema(cfg)
    schemes = check_config(cfg)
    assert schemes["toy-4"] == {"library": "toy", "levels": 16, "targets": schemes["fp32"]["targets"]}
    runnable, unsupported = cells(cfg, schemes)
    assert {(c.scheme, c.device) for c in runnable} == {("fp32", "cpu"), ("toy-4", "cpu")}
    # toy declares only the cpu (the Backend default): its CUDA cell is reported, not scheduled
    toy_cuda = [r for c, r in unsupported.items() if c.scheme == "toy-4"]
    assert toy_cuda == ["toy has no cuda implementation in this pipeline"]


def test_a_registered_backend_validates_its_own_parameters(toy_backend, default_config):
    cfg = copy.deepcopy(default_config)
    cfg["schemes"]["toy-3"] = {"library": "toy", "levels": 8}
    validate_schema(cfg)
    with pytest.raises(ConfigError, match=r"schemes\.toy-3\.levels: 8 is not offered by toy; valid: 16, 256"):
        check_config(cfg)
    unregister("toy")
    with pytest.raises(ConfigError, match=r"schemes\.toy-3\.library: unknown library 'toy'"):
        check_config(cfg)
