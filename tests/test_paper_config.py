"""The study's configuration: its DAG builds offline, and both LibriSpeech sources feed the
pipeline identically (proven on fixtures in the Hub's and openslr's exact formats)."""

from __future__ import annotations

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
        assert len(runnable) == n and len(unsupported) == n
        assert all(c.device == "cuda" for c in unsupported)
        assert all("CUDA is not available" in r or "no cuda implementation" in r for r in unsupported.values())
    pytorch_cuda = [r for c, r in unsupported.items() if schemes[c.scheme]["library"] == "pytorch"]
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
    n_schemes = len(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["schemes"])
    assert counts["quantize"] == n_schemes
    assert counts["transcribe"] >= 2 * n_schemes  # every scheme on both test sets (CPU; CUDA where present)


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
