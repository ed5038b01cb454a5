"""The study's configuration: its DAG builds offline, and both LibriSpeech sources feed the
pipeline identically (proven on fixtures in the Hub's and openslr's exact formats)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml
from workflow_utils import REPO, small_config, snakemake, write_config

FIXTURES = REPO / "tests" / "fixtures" / "librispeech"


@pytest.fixture(scope="module")
def paper_config() -> dict:
    return yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


def test_paper_config_is_valid_and_lists_every_cell(default_config, paper_config):
    from whisperquant.config import cells, check_config, validate_schema
    from whisperquant.quantize.backends.pytorch import _x86_without_vnni

    merged = {**default_config, **paper_config}
    merged["models"] = {**default_config["models"], **paper_config["models"]}
    merged["corpora"] = {**default_config["corpora"], **paper_config["corpora"]}
    validate_schema(merged)
    schemes = check_config(merged)
    runnable, unsupported = cells(merged, schemes)
    assert len(schemes) == len(default_config["schemes"])
    n = len(schemes) * 2  # two test sets
    import torch

    if not torch.cuda.is_available():  # CPU-only machine: every CUDA cell is a reported row, not a crash
        assert len(runnable) + len(unsupported) == 2 * n
        assert all(c.device == "cpu" for c in runnable)
        assert {c for c in unsupported if c.device == "cuda"} == {dataclasses.replace(c, device="cuda") for c in [
            *runnable, *unsupported] if c.device == "cpu"}
        cuda_reasons = [r for c, r in unsupported.items() if c.device == "cuda"]
        assert all("CUDA is not available" in r or "no cuda implementation" in r or "kernels on cuda" in r
                   for r in cuda_reasons)
        # on CPU only a compute type the engine has no CPU kernels for is refused, and it says so; on an
        # x86 CPU without VNNI also torch.ao static int8 with 8-bit activations (fbgemm can saturate there)
        cpu_refused = {c.scheme: r for c, r in unsupported.items() if c.device == "cpu"}
        float16 = {s for s, spec in schemes.items()
                   if spec["library"] == "ctranslate2" and "float16" in spec.get("compute_type", "")}
        static8 = {s for s, spec in schemes.items() if spec["library"] == "pytorch"
                   and spec.get("mode") == "static" and not spec.get("reduce_range")} if _x86_without_vnni() else set()
        assert static8 <= {"torch-static-int8", "torch-static-int8-fo", "torch-static-int8-keep3"}
        assert set(cpu_refused) == float16 | static8, cpu_refused
        assert all("kernels on cpu" in cpu_refused[s] for s in float16)
        assert all("needs an x86 CPU with VNNI" in cpu_refused[s] for s in static8)
    pytorch_cuda = [r for c, r in unsupported.items() if schemes[c.scheme]["library"] == "pytorch"
                    and c.device == "cuda"]
    assert all("no cuda implementation" in r for r in pytorch_cuda)


def test_paper_dag_builds_offline():
    """``snakemake -n --configfile config/paper.yaml`` from the repository root, as users run it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile",
                           "config/paper.yaml"], cwd=REPO, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = {p[0]: int(p[1]) for line in out.splitlines() if len(p := line.split()) == 2 and p[1].isdigit()}
    # one quantize job per scheme with a runnable cell (ct2's float16 types have none on a CPU-only
    # machine), every runnable cell transcribed on both test sets
    from whisperquant.config import cells, check_config

    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    merged = {**default, **paper, "models": {**default["models"], **paper["models"]},
              "corpora": {**default["corpora"], **paper["corpora"]}}
    runnable, _ = cells(merged, check_config(merged))
    assert counts["quantize"] == len({c.scheme for c in runnable})
    assert counts["transcribe"] == len(runnable)


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    from whisperquant.data.sources.librispeech import build_corpus, compare_manifests

    root = tmp_path_factory.mktemp("ls")
    hf = build_corpus({"source": "librispeech", "loader": "hf", "split": "test-clean",
                       "data_files": str(FIXTURES / "test.clean-00000-of-00001.parquet")}, root / "hf")
    slr = build_corpus({"source": "librispeech", "loader": "openslr", "split": "test-clean",
                        "tarball": str(FIXTURES / "test-clean.tar.gz")}, root / "openslr")
    assert compare_manifests(hf, slr) == []
    return hf, slr


def test_both_loaders_give_identical_hypotheses_through_the_pipeline(tmp_path, two_sources, default_config,
                                                                     download_cache):
    results = {}
    for name in ("hf", "openslr"):
        work = tmp_path / name
        cfg = small_config(default_config, download_cache, schemes={"fp32": {"library": "fp32"}})
        cfg["corpora"] = {"ls": {"source": "librispeech", "loader": name, "split": "test-clean",
                                 **({"data_files": str(FIXTURES / "test.clean-00000-of-00001.parquet")}
                                    if name == "hf" else {"tarball": str(FIXTURES / "test-clean.tar.gz")})}}
        cfg["calibration"] = {}
        cfg["grid"] = {"models": ["tiny.en"], "schemes": ["fp32"], "devices": ["cpu"], "corpora": ["ls"]}
        write_config(work, cfg)
        snakemake(work, "--cores", "2", "results/scores/tiny.en/fp32/cpu/ls.json")
        results[name] = (work / "results/transcripts/tiny.en/fp32/cpu/ls.jsonl").read_text()
        assert json.loads((work / "results/scores/tiny.en/fp32/cpu/ls.json").read_text())["status"] == "ok"
    assert results["hf"] == results["openslr"]
    row = json.loads(results["hf"].splitlines()[0])
    assert row["id"] == "61-70968-0000"
    assert row["hypothesis"].strip().startswith("He began a confused complaint against the wizard")
    shutil.rmtree(tmp_path, ignore_errors=True)
