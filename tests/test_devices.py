"""Which devices a run plans is the config's decision, not the planning machine's.

``devices.cuda.available``: ``auto`` plans cuda cells only where the planning
machine has an NVIDIA GPU; ``true`` plans them anyway (a CPU login node that
submits to GPU nodes), and a cuda job that then lands without a GPU ends as an
``unsupported`` row, not a crash and not a silent CPU run (proven by a real run
in tests/test_user_corpora.py); ``false`` never plans them.
"""

from __future__ import annotations

import pytest
from whisperquant.config import ConfigError, cells, check_config, validate_schema
from whisperquant.quantize.base import cuda_present
from workflow_utils import small_config


def _config(default_config, download_cache, available=None) -> dict:
    cfg = small_config(default_config, download_cache)
    cfg["grid"]["devices"] = ["cpu", "cuda"]
    if available is not None:
        cfg["devices"] = {"cuda": {"available": available}}
    return validate_schema(cfg)


def _plan(cfg: dict):
    return cells(cfg, check_config(cfg))


def test_true_plans_cuda_cells_on_a_machine_without_a_gpu(default_config, download_cache):
    runnable, unsupported = _plan(_config(default_config, download_cache, True))
    assert {c.device for c in runnable} == {"cpu", "cuda"}
    # torch.ao's quantised kernels are CPU-only: a library limit stays a row whatever the config says
    assert {(c.scheme, c.device) for c in unsupported} == {("torch-dynamic-int8", "cuda")}
    assert "no cuda implementation" in next(iter(unsupported.values()))


def test_false_never_plans_cuda_cells(default_config, download_cache):
    runnable, unsupported = _plan(_config(default_config, download_cache, False))
    assert {c.device for c in runnable} == {"cpu"}
    fp32_cuda = [r for c, r in unsupported.items() if c.scheme == "fp32"]
    assert fp32_cuda == ["CUDA cells are switched off (devices.cuda.available: false)"]


def test_auto_follows_the_planning_machine(default_config, download_cache):
    cfg = _config(default_config, download_cache)
    assert cfg["devices"]["cuda"]["available"] == "auto"  # the schema's default
    runnable, unsupported = _plan(cfg)
    fp32_cuda = [c for c in runnable if c.scheme == "fp32" and c.device == "cuda"]
    if cuda_present():
        assert fp32_cuda
    else:
        assert not fp32_cuda
        reason = next(r for c, r in unsupported.items() if c.scheme == "fp32")
        assert "CUDA is not available on this machine" in reason and "devices.cuda.available" in reason


def test_a_bad_value_names_the_key(default_config, download_cache):
    cfg = small_config(default_config, download_cache)
    cfg["devices"] = {"cuda": {"available": "yes"}}
    with pytest.raises(ConfigError, match=r"^devices\.cuda\.available: "):
        validate_schema(cfg)


def _planned_transcriptions(configfile: str, *extra: str) -> dict[str, int]:
    """Dry run from the repository root, as users run it: transcribe jobs per device (the paper config's
    plain dry run is the session's shared one)."""
    import re
    import subprocess
    import sys

    from workflow_utils import REPO, paper_dry_run

    if configfile == "config/paper.yaml" and not extra:
        proc = paper_dry_run()
    else:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", configfile, *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts: dict[str, int] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        if block.startswith("rule transcribe:"):
            device = re.search(r"device=(\w+)", block).group(1)
            counts[device] = counts.get(device, 0) + 1
    return counts


@pytest.mark.parametrize("configfile, corpora", [("config/paper.yaml", 2), ("config/open_asr.yaml", 8)])
def test_the_study_configs_plan_their_cuda_jobs_from_this_cpu_machine(configfile, corpora):
    """With CUDA declared available, every cuda cell a library can run is planned here (no GPU needed)."""
    import yaml
    from whisperquant.quantize import get_backend
    from workflow_utils import REPO

    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = yaml.safe_load((REPO / configfile).read_text())
    blocks = cfg["grid"] if isinstance(cfg["grid"], list) else [cfg["grid"]]
    def runs_on_cuda(spec: dict) -> bool:
        backend = get_backend(spec["library"])
        params = backend.resolve("s", {k: v for k, v in spec.items() if k != "library"})
        return backend.unsupported_reason(params, "cuda") is None  # e.g. CTranslate2 int16 is CPU-only

    cuda_schemes = {s for b in blocks if "cuda" in b["devices"]
                    for s in (default["schemes"] if b["schemes"] == "all" else b["schemes"])
                    if runs_on_cuda(default["schemes"][s])}
    planned = _planned_transcriptions(configfile, "--config", 'devices={"cuda": {"available": true}}')
    assert planned.get("cuda") == len(cuda_schemes) * corpora
    if not cuda_present():  # auto: nothing for cuda on a CPU-only planner
        assert "cuda" not in _planned_transcriptions(configfile)
