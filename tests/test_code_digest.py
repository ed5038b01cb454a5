"""A stage's code digest covers the code the stage imports: its own library (or corpus source) module,
not the others', and calibration code only where the job calibrates.

Snakemake reruns a job when its ``code`` parameter changes; editing one backend
must rerun that library's cells only, adding a corpus source must not rebuild
every other corpus, and editing a module reruns exactly the stages that import it.
Proven on a copy of the package.
"""

from __future__ import annotations

import shutil
from copy import deepcopy

import pytest
from whisperquant import provenance
from workflow_utils import copy_repo, copy_run, planned_jobs, snakemake, wide_config, write_config

LIBRARIES = sorted(p.stem for p in (provenance.PACKAGE / "quantize" / "backends").glob("[!_]*.py"))
SOURCES = sorted(p.stem for p in (provenance.PACKAGE / "data" / "sources").glob("[!_]*.py"))


@pytest.fixture
def package(tmp_path, monkeypatch):
    copy = tmp_path / "whisperquant"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE", copy)
    provenance.code_digest.cache_clear()
    yield copy
    provenance.code_digest.cache_clear()


def _edit(path):
    path.write_text(path.read_text() + "\n# edited\n")
    provenance.code_digest.cache_clear()


def test_editing_one_backend_changes_only_its_librarys_digest(package):
    before = {lib: provenance.code_digest("quantize", lib) for lib in ("hqq", "bnb", "pytorch")}
    whole = provenance.code_digest("quantize")
    _edit(package / "quantize" / "backends" / "bnb.py")
    assert provenance.code_digest("quantize", "bnb") != before["bnb"]
    assert provenance.code_digest("quantize", "hqq") == before["hqq"]
    assert provenance.code_digest("quantize", "pytorch") == before["pytorch"]
    assert provenance.code_digest("quantize") != whole  # without a variant, every module counts


def test_shared_quantize_code_changes_every_librarys_digest(package):
    before = {lib: provenance.code_digest("transcribe", lib) for lib in LIBRARIES}
    _edit(package / "quantize" / "base.py")
    assert all(provenance.code_digest("transcribe", lib) != d for lib, d in before.items())


def test_a_helper_module_counts_for_the_libraries_that_import_it(package):
    before = {lib: provenance.code_digest("transcribe", lib) for lib in ("hqq", "pytorch", "bnb")}
    _edit(package / "quantize" / "linear_swap.py")  # hqq and pytorch import it, bnb does not
    assert provenance.code_digest("transcribe", "hqq") != before["hqq"]
    assert provenance.code_digest("transcribe", "pytorch") != before["pytorch"]
    assert provenance.code_digest("transcribe", "bnb") == before["bnb"]


def test_a_corpus_source_counts_the_sibling_modules_it_imports(package):
    before = {src: provenance.code_digest("corpus", src) for src in ("kaldi", "embedded", "manifest")}
    _edit(package / "data" / "sources" / "manifest.py")  # kaldi imports from it
    assert provenance.code_digest("corpus", "manifest") != before["manifest"]
    assert provenance.code_digest("corpus", "kaldi") != before["kaldi"]
    assert provenance.code_digest("corpus", "embedded") == before["embedded"]



# --- every digest a grid plans, before and after one edit ---


def _digests() -> dict[tuple, str]:
    """Each stage's digest, for every library (calibrated or not) and corpus source."""
    keys = [("model",), ("graphs",), ("score",), ("report",), *(("corpus", s) for s in SOURCES),
            *(("quantize", lib, cal) for lib in LIBRARIES for cal in (False, True)),
            *(("transcribe", lib) for lib in LIBRARIES), *(("sensitivity", lib, True) for lib in LIBRARIES)]
    return {k: provenance.code_digest(*k) for k in keys}


def _changed(package, path: str, text: str = "\n# edited\n") -> set[tuple]:
    before = _digests()
    file = package / path
    file.write_text(file.read_text() + text)
    provenance.code_digest.cache_clear()
    after = _digests()
    return {k for k in before if after[k] != before[k]}


def _all(stage: str, *rest) -> set[tuple]:
    return {(stage, lib, *rest) for lib in LIBRARIES}


def test_the_decoding_rule_reruns_transcription_and_calibration_only(package):
    assert _changed(package, "models/decoding.py") == (
        _all("transcribe") | _all("sensitivity", True) | _all("quantize", True)
    )


def test_the_shared_figure_code_redraws_the_report_and_the_sensitivity_figures(package):
    assert _changed(package, "report/figure.py") == {("report",)} | _all("sensitivity", True)


def test_the_summary_plots_redraw_the_report_only(package):
    assert _changed(package, "report/plots.py") == {("report",)}


def test_the_ctranslate2_reader_counts_for_the_model_import_and_the_ctranslate2_backend(package):
    assert _changed(package, "models/ct2.py") == {
        ("model",), ("quantize", "ctranslate2", False), ("quantize", "ctranslate2", True),
        ("transcribe", "ctranslate2"), ("sensitivity", "ctranslate2", True),
    }


def test_one_backend_module_counts_for_its_library_only(package):
    assert _changed(package, "quantize/backends/hqq.py") == {
        ("quantize", "hqq", False), ("quantize", "hqq", True), ("transcribe", "hqq"), ("sensitivity", "hqq", True),
    }


def test_the_graph_export_counts_for_the_export_and_the_libraries_that_read_the_graphs(package):
    """The ONNX export is its own stage: editing it re-exports, and reruns the libraries built from the
    graphs (ONNX Runtime, OpenVINO) and PT2E, which exports the same graph modules with torch.export."""
    libraries = ("onnxruntime", "openvino", "pt2e")
    assert _changed(package, "models/onnx_export.py") == {("graphs",)} | {
        (stage, lib, *rest) for lib in libraries
        for stage, *rest in (("quantize", False), ("quantize", True), ("transcribe",), ("sensitivity", True))}


@pytest.mark.parametrize("source", ["noisy", "embedded", "librispeech"])
def test_a_corpus_source_counts_for_its_corpora_only(package, source):
    assert _changed(package, f"data/sources/{source}.py") == {("corpus", source)}


def test_a_data_file_counts_for_the_module_that_reads_it(package):
    assert _changed(package, "data/embedded_corpus.yaml", "# edited\n") == {("corpus", "embedded")}
    assert _changed(package, "report/study_reference.csv", "") == set()  # unchanged bytes
    assert _changed(package, "report/study_reference.csv", "\n") == {("report",)}


def test_the_scorer_reruns_scoring_and_the_report_only(package):
    assert _changed(package, "evaluate/scoring.py") == {("score",), ("report",)}


def test_jobs_counts_per_function(package):
    jobs = package / "jobs.py"
    text = jobs.read_text()
    before = _digests()
    jobs.write_text(text.replace("def score_job(", "def score_job(  # edited\n", 1))
    provenance.code_digest.cache_clear()
    assert {k for k, d in _digests().items() if d != before[k]} == {("score",)}
    jobs.write_text(text.replace("def sensitivity_job(", "def sensitivity_job(  # edited\n", 1))
    provenance.code_digest.cache_clear()
    assert {k for k, d in _digests().items() if d != before[k]} == _all("sensitivity", True)


def test_digests_parse_the_sources_without_importing_them(package):
    (package / "quantize" / "backends" / "hqq.py").write_text("raise RuntimeError('imported')\n")
    provenance.code_digest.cache_clear()
    assert provenance.code_digest("transcribe", "hqq")
    assert any(f.startswith("jobs.py:") and "transcribe_job" in f for f in provenance.stage_files("transcribe", "hqq"))
    assert not any(f.startswith(("config/", "provenance.py")) for f in provenance.stage_files("transcribe", "hqq"))


def test_a_new_stage_is_one_entry(package, monkeypatch):
    monkeypatch.setitem(provenance.STAGE_ENTRIES, "timing", ("jobs:timing_job",))
    with pytest.raises(LookupError, match="defines no 'timing_job'"):
        provenance.code_digest("timing")
    jobs = package / "jobs.py"
    jobs.write_text(jobs.read_text() + "\n\ndef timing_job():\n    from .evaluate.stats import pareto_frontier\n")
    provenance.code_digest.cache_clear()
    assert "evaluate/stats.py" in provenance.stage_files("timing")
    assert "jobs.py:timing_job" in provenance.stage_files("timing")


# --- end to end: what `snakemake -n` plans after one edit, in a copy of a finished run ---

D0 = r"^model\.decoder\.layers\.0\."
E2E_SCHEMES = {
    "fp32": {"library": "fp32"},
    "torch-dynamic-int8": {"library": "pytorch", "mode": "dynamic"},  # uncalibrated
    "torch-static-int8-fo-rr": {"library": "pytorch", "mode": "static", "granularity": "per_channel",
                                "observer": "histogram", "output": "float", "reduce_range": True},  # calibrated
    "hqq-2bit-d0": {"library": "hqq", "bits": 2, "group_size": 64, "targets": D0},
    "ct2-int8": {"library": "ctranslate2", "compute_type": "int8"},
}
CELLS = len(E2E_SCHEMES)  # one model, one corpus, one device
REPORT = {"aggregate": 1, "publish_report": 1, "all": 1}
#: The file edited -> the jobs a dry run plans (both corpora, clean and calibration, are embedded).
E2E_EXPECTED = {
    "models/decoding.py": {"quantize": 1, "sensitivity": 1, "transcribe": CELLS, "score": CELLS, **REPORT},
    # the model importer reads the CTranslate2 wheel with it: everything downstream of the model
    "models/ct2.py": {"import_model": 1, "quantize": CELLS, "sensitivity": 1, "transcribe": CELLS,
                      "score": CELLS, **REPORT},
    "quantize/backends/hqq.py": {"quantize": 1, "sensitivity": 1, "transcribe": 1, "score": 1, **REPORT},
    # both corpora: the calibrated scheme and the sensitivity analysis read the calibration corpus
    "data/sources/embedded.py": {"build_corpus": 2, "quantize": 1, "sensitivity": 1, "transcribe": CELLS,
                                 "score": CELLS, **REPORT},
    "data/sources/kaldi.py": {},  # no corpus of the run is a Kaldi one
    "evaluate/scoring.py": {"score": CELLS, **REPORT},
    "report/figure.py": {"sensitivity": 1, **REPORT},
}


def e2e_config(default_config, download_cache) -> dict:
    """The session's wide run's config (which defines E2E_SCHEMES and the sensitivity analysis of
    hqq-2bit-d0) with its grid cut to E2E_SCHEMES on the clean corpus: a copy of the wide run then
    holds every cell of it, and only the report is redone."""
    cfg = wide_config(default_config, download_cache)
    cfg["schemes"].update(deepcopy(E2E_SCHEMES))
    cfg["grid"] = {"models": ["tiny.en"], "schemes": list(E2E_SCHEMES), "devices": ["cpu"], "corpora": ["clean"]}
    assert cfg["sensitivity"] == [{"model": "tiny.en", "scheme": "hqq-2bit-d0"}]
    return cfg


def plan_edits(work, repo) -> dict[str, dict[str, int]]:
    """For each file of :data:`E2E_EXPECTED`: a comment appended in ``repo``'s package, the dry run's job
    counts in ``work``, the file restored."""
    table = {}
    for path in E2E_EXPECTED:
        file = repo / "workflow" / "whisperquant" / path
        text = file.read_text()
        file.write_text(text + "\n# edited\n")
        try:
            table[path] = planned_jobs(work, repo=repo)
        finally:
            file.write_text(text)
    return table


def format_table(table: dict[str, dict[str, int]]) -> str:
    return "\n".join(f"{path:28} {' '.join(f'{r}={n}' for r, n in sorted(jobs.items())) or '(nothing)'}"
                     for path, jobs in table.items())


@pytest.mark.slow
def test_each_edit_reruns_exactly_the_jobs_that_run_the_edited_code(wide_run, tmp_path_factory, default_config,
                                                                     download_cache):
    repo = copy_repo(tmp_path_factory.mktemp("code-digest") / "repo")
    work = copy_run(wide_run, tmp_path_factory.mktemp("code-digest-run") / "run")
    write_config(work, e2e_config(default_config, download_cache))
    # the same code in the copied checkout, the same cells: only the report of the smaller grid is to do
    assert planned_jobs(work, repo=repo) == REPORT
    snakemake(work, "--cores", "2", repo=repo)
    assert planned_jobs(work, repo=repo) == {}
    table = plan_edits(work, repo)
    print("\nfile edited -> jobs planned\n" + format_table(table))
    assert table == E2E_EXPECTED, format_table(table)
