"""The study's configuration: its DAG builds offline, and both LibriSpeech sources feed the
pipeline identically (proven on fixtures in the Hub's and openslr's exact formats)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import yaml
from workflow_utils import (
    REPO,
    copy_run,
    job_counts,
    paper_dry_run,
    planned_jobs,
    small_config,
    snakemake,
    write_config,
)

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
        assert all("lacks VNNI" in cpu_refused[s] for s in static8)
    pytorch_cuda = [r for c, r in unsupported.items() if schemes[c.scheme]["library"] == "pytorch"
                    and c.device == "cuda"]
    assert all("no cuda implementation" in r for r in pytorch_cuda)


def test_paper_dag_builds_offline():
    """``snakemake -n --configfile config/paper.yaml`` from the repository root, as users run it."""
    counts = job_counts(paper_dry_run().stdout)
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


def test_both_loaders_give_identical_hypotheses_through_the_pipeline(tmp_path, two_sources, finished_run,
                                                                     default_config, download_cache):
    """One Snakemake run, in a copy of the session's finished run (its model and fp32 artifact reused):
    the same fixture split through each loader is a corpus of its own, transcribed and scored."""
    loaders = {"hf": {"data_files": str(FIXTURES / "test.clean-00000-of-00001.parquet")},
               "openslr": {"tarball": str(FIXTURES / "test-clean.tar.gz")}}
    work = copy_run(finished_run, tmp_path / "run")
    cfg = small_config(default_config, download_cache)
    for name, where in loaders.items():
        cfg["corpora"][f"ls-{name}"] = {"source": "librispeech", "loader": name, "split": "test-clean", **where}
    cfg["grid"] = {"models": ["tiny.en"], "schemes": ["fp32"], "devices": ["cpu"], "corpora": list(cfg["corpora"])[-2:]}
    write_config(work, cfg)
    targets = [f"results/scores/tiny.en/fp32/cpu/ls-{name}.json" for name in loaders]
    assert planned_jobs(work, *targets) == {"build_corpus": 2, "transcribe": 2, "score": 2}
    snakemake(work, "--cores", "2", *targets)
    results = {name: (work / f"results/transcripts/tiny.en/fp32/cpu/ls-{name}.jsonl").read_text() for name in loaders}
    for target in targets:
        assert json.loads((work / target).read_text())["status"] == "ok"
    assert results["hf"] == results["openslr"]
    row = json.loads(results["hf"].splitlines()[0])
    assert row["id"] == "61-70968-0000"
    assert row["hypothesis"].strip().startswith("He began a confused complaint against the wizard")
    shutil.rmtree(work, ignore_errors=True)
