"""The default grid runs to ``ok`` rows (no ``failed`` row hides a bug); runtime cells are grid cells.

Every scheme of the default grid (all blocks of ``config/config.yaml``) on tiny.en
and two real clips, through the real workflow: since only a backend's typed
LibraryLimitation may become a ``failed`` row and anything else fails the job, a
green run with every row ``ok`` is the proof.  The same run carries the deployment
runtimes' int8 schemes (config/kinds.yaml's), to show that an engine's cell is an
ordinary grid cell: quantised, transcribed, scored and sized (that their float32
cells decode transformers' tokens exactly is test_engines.py's, in-process).  The other
kinds of config/kinds.yaml run in-process in ``test_backends.py`` (every scheme of
the full grid) and on real weights in ``test_quality.py``; each Snakemake job costs
~10 s of imports alone.  The run is the session's shared wide run (conftest.py), which
also carries the sensitivity, mixed-precision and noisy-corpus cells other modules read.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from whisperquant.config import scheme_names
from workflow_utils import RUNTIME_INT8, RUNTIME_REFUSED, cpu_refusals, planned_jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_grid_run(wide_run, default_config):
    """The wide run and the default grid's schemes with the runtimes' (all of them in its clean block)."""
    names = list(dict.fromkeys([*scheme_names(default_config), *RUNTIME_INT8.values(), *RUNTIME_REFUSED]))
    return wide_run, names


def _clean_summary(work):
    """The summary's rows of the clean corpus (the noisy block's are the noisy-corpus test's), by scheme."""
    df = pd.read_csv(work / "results" / "report" / "summary.csv")
    return df[df.corpus == "clean"].set_index("scheme")


def test_default_grid_yields_no_failed_row(default_grid_run):
    work, names = default_grid_run
    # the study's four libraries and both PyTorch modes are in the default grid
    study = {"fp32", "torch-dynamic-int8", "torch-static-int8-fo-rr", "quanto-w8", "hqq-4bit-g64", "bnb-nf4"}
    assert study <= set(names)
    summary = _clean_summary(work)
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    assert set(names) <= set(summary.index) and sorted(summary.index) == sorted(scheme_names(config))
    # the rows that are not ok are decided before any job runs: a CUDA-only compute type, and on an x86
    # CPU without VNNI torch.ao's 8-bit static int8 (fbgemm's kernels there can saturate)
    refused = cpu_refusals(yaml.safe_load((work / "config" / "config.yaml").read_text()))
    assert "ct2-float16" in refused
    assert set(refused) - {"ct2-float16"} <= {"torch-static-int8"}, refused
    bad = summary[(summary.status != "ok") & ~summary.index.isin(refused)]
    assert bad.empty, bad[["status", "reason"]].to_string()
    for scheme, reason in refused.items():
        assert summary.loc[scheme, "status"] == "unsupported" and summary.loc[scheme, "reason"] == reason
    assert "no float16 kernels on cpu" in refused["ct2-float16"]


def test_runtime_cells_are_grid_cells(default_grid_run):
    """Engine cells are quantised, transcribed, scored, in the summary with their speed ratios and sizes;
    a CUDA-only compute type on this CPU machine is a row with its reason."""
    work, _ = default_grid_run
    df = _clean_summary(work)
    int8 = list(RUNTIME_INT8.values())
    assert (df.loc[int8, "status"] == "ok").all()
    assert (df.loc[int8, "wer"] <= df.loc["fp32", "wer"] + 0.05).all(), df.loc[int8, "wer"]
    assert df.loc["ct2-int8", "speedup_vs_ct2_int8"] == 1.0
    ok = df[df.status == "ok"]
    assert ok.speedup_vs_fp32.notna().all() and df.loc["fp32", "speedup_vs_fp32"] == 1.0
    assert df.loc["fp32", "same_as_fp32_pct"] == 100.0 and ok.same_as_fp32.notna().all()
    assert df.loc[int8, "compute_dtype"].tolist() == ["int8", "int8", "float32"]  # NNCF int8 weights: f32 matmuls
    files = {"ctranslate2": ["model.bin", "config.json"], "onnxruntime": ["encoder.onnx", "decoder.onnx"],
             "openvino": ["encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin"]}
    for lib, scheme in RUNTIME_INT8.items():
        folder = work / "results" / "quantized" / "tiny.en" / scheme
        cell = json.loads(folder.with_name(f"{scheme}.json").read_text())  # the record beside it
        # artifact_bytes: what the runtime loads
        assert cell["artifact_bytes"] == sum((folder / f).stat().st_size for f in files[lib])
        assert abs(cell["artifact_bytes"] - df.loc[scheme, "artifact_bytes"]) < 1e3
    md = (work / "results" / "report" / "summary.md").read_text()
    assert "× CT2 int8" in md and "`ct2-float16` (ctranslate2): **unsupported**" in md


def test_the_graph_runtimes_share_one_export(default_grid_run):
    """ONNX Runtime's and OpenVINO's cells are built from one export of the model (rule export_graphs):
    re-exporting plans those two libraries' cells again, and no other library's."""
    work, _ = default_grid_run
    exported = work / "results" / "graphs" / "tiny.en"
    assert sorted(p.name for p in exported.iterdir() if not p.name.startswith(".")) == ["decoder.onnx",
                                                                                       "encoder.onnx"]
    assert [p.name for p in (work / "results" / "logs" / "export_graphs").iterdir()] == ["tiny.en.log"]
    for scheme in ("ort-int8", "ov-int8"):  # each record names the export it was built from
        record = json.loads((work / "results" / "quantized" / "tiny.en" / f"{scheme}.json").read_text())
        assert record["graphs"] == "results/graphs/tiny.en"
    cells = {"quantize": 2, "transcribe": 2, "score": 2}  # ort-int8 and ov-int8, on the clean corpus
    assert planned_jobs(work, "--forcerun", "export_graphs") == {
        "export_graphs": 1, **cells, "aggregate": 1, "publish_report": 1, "all": 1}
