"""Layer sensitivity on real weights: one Linear quantised at a time, the damage measured teacher-forced."""

from __future__ import annotations

import json

import pytest
from workflow_utils import DECODER_0


@pytest.fixture(scope="module")
def calibration(tiny_en, two_clip_corpus):
    from transformers import WhisperProcessor
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import load_corpus
    from whisperquant.quantize.calibration import CalibrationSet, calibration_features

    processor = WhisperProcessor.from_pretrained(str(tiny_en))
    feats = calibration_features(processor, [load_audio(u.audio_path, u.id) for u in load_corpus(two_clip_corpus)])
    return CalibrationSet(feats, max_new_tokens=96)


def _rows(tiny_en, calibration, library, spec):
    from whisperquant.evaluate.sensitivity import layer_sensitivity
    from whisperquant.quantize import get_backend

    params = get_backend(library).resolve("s", {**spec, "targets": DECODER_0})
    return layer_sensitivity(tiny_en, library, params, calibration, progress=False)


def test_each_linear_gets_a_row_and_two_bits_hurt_more_than_eight(tiny_en, calibration):
    int8, facts = _rows(tiny_en, calibration, "pytorch", {"mode": "dynamic"})
    two, _ = _rows(tiny_en, calibration, "hqq", {"bits": 2, "group_size": 64})
    names = [r["module"] for r in int8]
    assert names == [r["module"] for r in two] and len(names) == 10  # decoder layer 0's Linears, model order
    assert names[0] == "model.decoder.layers.0.self_attn.k_proj" and names[-1] == "model.decoder.layers.0.fc2"
    assert all(r["stack"] == "decoder" and r["layer"] == 0 for r in int8)
    assert all(r["kl"] >= 0 and 0 <= r["top1_pct"] <= 100 for r in int8 + two)
    assert facts["layers"] == 10 and facts["scored_positions"] > 20 and facts["total_s"] > 0
    # int8 barely moves the distribution; 2-bit weights move it by orders of magnitude more
    assert sum(r["kl"] for r in two) > 10 * sum(r["kl"] for r in int8)
    # layer by layer too (the logits' SQNR of a layer whose output barely reaches them stays high either way)
    assert sum(a["sqnr_db"] > b["sqnr_db"] and a["kl"] < b["kl"] for a, b in zip(int8, two, strict=True)) >= 8
    assert min(r["top1_pct"] for r in int8) > 90


def test_sensitivity_runs_through_the_workflow(wide_run):
    """A ``sensitivity:`` entry is a rule of its own: table, facts and plot, from the calibration corpus;
    mixed-precision schemes are planned from its table and run like any other cell (the shared wide run)."""
    import pandas as pd

    out = wide_run / "results" / "report" / "sensitivity" / "tiny.en"
    table = pd.read_csv(out / "hqq-2bit-d0.csv")
    assert len(table) == 10 and table.kl.notna().all() and list(table.order) == list(range(10))
    facts = json.loads((out / "hqq-2bit-d0.json").read_text())
    assert len(facts["top5_by_kl"]) == 5 and facts["calibration_utterances"]
    assert facts["top5_by_kl"][0]["kl"] == pytest.approx(table.kl.max(), rel=1e-5)  # the CSV keeps 6 digits
    assert (out / "hqq-2bit-d0.png").stat().st_size > 10_000
    assert facts["bits"] == 2
    ranked = list(table.sort_values("kl", ascending=False).module)
    keep = json.loads((wide_run / "results/quantized/tiny.en/hqq-keep3-d0.json").read_text())
    assert keep["status"] == "ok" and keep["mixed"]["widths"] == {"8": 3, "2": 7}
    assert sorted(m for m, w in keep["mixed"]["plan"].items() if w == 8) == sorted(ranked[:3])
    assert sorted(keep["resolved_params"]["layer_bits"]) == sorted(ranked[:3])
    budget = json.loads((wide_run / "results/quantized/tiny.en/hqq-budget-d0.json").read_text())
    assert budget["status"] == "ok" and len(budget["mixed"]["widths"]) >= 2, budget["mixed"]
    assert budget["artifact_bytes"] <= 143.3e6 and 2 < budget["bits"] < 8
    for scheme in ("hqq-keep3-d0", "hqq-budget-d0"):  # scored cells, in the summary like any other
        score = json.loads((wide_run / f"results/scores/tiny.en/{scheme}/cpu/clean.json").read_text())
        assert score["status"] == "ok", score
    summary = pd.read_csv(wide_run / "results/report/summary.csv").set_index("scheme")
    assert summary.loc["hqq-budget-d0", "bits"] == pytest.approx(budget["bits"])


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["schemes"]["hqq-keep3-d0"]["mixed"].update(sensitivity="nope"),
     "schemes.hqq-keep3-d0.mixed.sensitivity: unknown scheme 'nope'"),
    (lambda c: c["schemes"]["hqq-keep3-d0"].update(targets=r"^model\.decoder\.layers\.1\."),
     "plan from a table of the same layers"),
    (lambda c: (c["schemes"].update({"hqq-4bit-d0": {**c["schemes"]["hqq-2bit-d0"], "bits": 4}}),
                c["schemes"]["hqq-budget-d0"]["mixed"].update(sensitivity="hqq-4bit-d0")),
     "schemes.hqq-budget-d0.mixed.sensitivity: 'hqq-4bit-d0' measured each Linear at 4 bits, but the plan puts "
     "layers at 2 bits"),
    (lambda c: c["schemes"]["hqq-keep3-d0"].update(bits=4),
     "'hqq-2bit-d0' measured each Linear at 2 bits, but the plan puts layers at 4 bits"),
    (lambda c: c["schemes"]["hqq-keep3-d0"]["mixed"].update(keep_bits=1),  # the kept layers narrower still
     "'hqq-2bit-d0' measured each Linear at 2 bits, but the plan puts layers at 1 bits"),
    (lambda c: c.update(sensitivity=[{"model": "tiny.en", "scheme": "fp32"}]),
     "sensitivity[0].scheme: 'fp32' (fp32) quantises no single Linear"),
])
def test_a_bad_sensitivity_entry_names_the_key(default_config, download_cache, mutate, message):
    """The wide run's config with one mistake: refused before any job, by the checks the workflow runs
    (tests/test_config_validation.py proves a ConfigError stops ``snakemake -n``)."""
    from whisperquant.config import ConfigError, check_config, validate_schema
    from workflow_utils import wide_config

    cfg = wide_config(default_config, download_cache)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        check_config(validate_schema(cfg))
    assert message in str(err.value)
