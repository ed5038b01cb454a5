"""Summary rows from the cell records (optional keys -> empty) and the study comparison's rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from whisperquant.report import study
from whisperquant.report.aggregate import COLUMNS, build_summary, cell_row

CELL = {"model": "small", "scheme": "quanto-w8", "device": "cpu", "corpus": "test-clean"}
QUANT = {"status": "ok", "library": "quanto", "method": "w8", "bits": 8, "artifact_bytes": 4e8,
         "param_bytes": 3.9e8, "float_param_bytes": 1e7, "compute_dtype": "float32"}
SCORE = {"status": "ok", "n_utts": 10, "ref_words": 200, "errors": 12, "substitutions": 6, "deletions": 2,
         "insertions": 4, "hits": 192, "wer": 0.06, "empty_hyps": 1, "looping_hyps": 2}
HOST = {"cpu_model": "AMD EPYC", "cpu_vendor": "AuthenticAMD", "isa": ["avx2", "fma"], "isa_known": True,
        "cores_available": 2, "machine": "x86_64"}
TIMING = {"status": "ok", "wall_s": 5.0, "audio_s": 50.0, "rtf": 0.1, "rtfx": 10.5, "rtfx_low": 9.0,
          "rtfx_high": 12.0, "pairs": 6, "timing_stop": "interval within ±1.0 % of the estimate after 6 pairs",
          "timing_protocol": "paired", "speedup_vs_fp32": 1.25, "speedup_low": 1.2, "speedup_high": 1.3,
          "pair_ratios": [1.2, 1.22, 1.25, 1.25, 1.27, 1.3], "fp32_rtfx": 8.4, "core_s_per_audio_h": 685.7,
          "cpu_s_per_audio_h": 650.0, "energy_j_per_audio_h": None, "energy_reason": "no counter",
          "model_mem_mb": 410.5, "peak_rss_mb": 900.0, "threads": 2, "batch_size": 8, "compute_dtype": "bfloat16",
          "host": HOST}

NEW = ["empty_hyps", "looping_hyps", "insertion_rate", "rtfx", "rtfx_low", "rtfx_high", "pairs", "timing_stop",
       "timing_protocol", "speedup_vs_fp32", "speedup_low", "speedup_high", "fp32_rtfx", "core_s_per_audio_h",
       "cpu_s_per_audio_h", "energy_j_per_audio_h", "energy_reason", "model_mem_mb", "peak_rss_mb", "threads",
       "batch_size", "compute_dtype", "host", "host_isa", "host_cpu"]


def test_columns_hold_the_new_keys_and_keep_the_old():
    assert set(NEW) <= set(COLUMNS)
    for old in ("model", "scheme", "wer", "artifact_bytes", "compression_pct", "rtf", "peak_gpu_mb"):
        assert old in COLUMNS
    assert len(set(COLUMNS)) == len(COLUMNS)


def test_cell_row_copies_the_records():
    row = cell_row(CELL, QUANT, TIMING, SCORE)
    assert row["status"] == "ok"
    assert row["compute_dtype"] == "bfloat16"  # the timing record's wins
    assert row["insertion_rate"] == pytest.approx(4 / 200)
    for k in ("empty_hyps", "looping_hyps"):
        assert row[k] == SCORE[k]
    for k in ("rtfx", "rtfx_low", "rtfx_high", "pairs", "timing_stop", "speedup_vs_fp32", "speedup_low",
              "core_s_per_audio_h", "model_mem_mb", "threads"):
        assert row[k] == TIMING[k]
    assert (row["host_isa"], row["host_cpu"]) == ("avx2", "AMD EPYC") and row["host"].startswith("amd-epyc-2c-")
    # no compute dtype in the timing record: the quantize record's
    assert cell_row(CELL, QUANT, {k: v for k, v in TIMING.items() if k != "compute_dtype"}, SCORE)[
        "compute_dtype"] == "float32"


def test_missing_keys_give_empty_cells(tmp_path):
    """Records written before these keys existed still aggregate."""
    old_score = {k: v for k, v in SCORE.items() if k not in ("empty_hyps", "looping_hyps")}
    old_timing = {k: TIMING[k] for k in ("status", "wall_s", "audio_s", "rtf", "rtfx", "peak_rss_mb")}
    old_quant = {k: v for k, v in QUANT.items() if k != "compute_dtype"}
    paths = {}
    for name, rec in (("quant", old_quant), ("timing", old_timing), ("score", old_score)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(rec))
    failed = {**CELL, "scheme": "bad", **{k: paths[k] for k in ("quant", "score")},
              "timing": tmp_path / "failed.json"}
    (tmp_path / "failed.json").write_text(json.dumps({"status": "failed", "reason": "boom", "log": "x.log"}))
    df = build_summary([{**CELL, **paths}, failed], [{**CELL, "scheme": "nf4", "library": "bnb",
                                                        "reason": "needs CUDA"}])
    assert list(df.columns) == COLUMNS
    ok = df.set_index("scheme").loc["quanto-w8"]
    assert ok.rtfx == 10.5 and ok.insertion_rate == pytest.approx(0.02)
    for k in ("empty_hyps", "looping_hyps", "rtfx_low", "rtfx_high", "pairs", "model_mem_mb", "speedup_vs_fp32",
              "host"):
        assert pd.isna(ok[k]), k
    assert pd.isna(ok.compute_dtype) and pd.isna(ok.timing_stop)
    bad = df.set_index("scheme").loc["bad"]
    assert bad.status == "failed" and math.isnan(bad.insertion_rate)
    assert df.set_index("scheme").loc["nf4", "status"] == "unsupported"
    csv = tmp_path / "s.csv"
    df.to_csv(csv, index=False)
    assert list(pd.read_csv(csv).columns) == COLUMNS


# --------------------------------------------------------------------------- the study


def _summary(model: str, corpora=("test-clean", "test-other")) -> pd.DataFrame:
    rows = []
    for corpus in corpora:
        for scheme, lib, wer in (("fp32", "fp32", 0.035), ("bnb-nf4", "bnb", 0.04),
                                 ("torch-dynamic-int8", "pytorch", 0.036), ("quanto-w8", "quanto", 0.034)):
            rows.append({"model": model, "scheme": scheme, "library": lib, "device": "cpu", "corpus": corpus,
                         "status": "ok", "wer": wer, "compression_pct": 60.0, "rtf": 0.1})
    return pd.DataFrame(rows)


HUB_SMALL = {"source": "hub", "repo_id": "openai/whisper-small", "revision": "x"}
LIBRISPEECH = {"test-clean": {"source": "librispeech", "loader": "hf", "split": "test-clean"},
               "test-other": {"source": "librispeech", "loader": "openslr", "split": "test-other"}}


def test_study_numeric_only_for_the_study_cells():
    df = study.compare(_summary("small"), "test-clean", "test-other", models={"small": HUB_SMALL},
                       corpora=LIBRISPEECH)
    assert "comparable" in df.columns and len(df) == len(study.reference())
    assert set(df["comparable"]) == {"numeric"}
    wer = df[(df.scheme == "fp32") & (df.study_corpus == "test-clean") & (df.metric == "WER %")].iloc[0]
    assert wer.ours == pytest.approx(3.5) and wer.difference == pytest.approx(3.5 - 3.48)
    md = study.comparison_markdown(df)
    assert "+0.02" in md and "(direction only)" not in md.split("\n", 2)[2]


@pytest.mark.parametrize(
    ("models", "corpora", "numeric_size"),
    [
        ({"small": {"source": "pypi_ct2"}}, LIBRISPEECH, False),  # another source
        ({"small": {"source": "hub", "repo_id": "openai/whisper-small.en"}}, LIBRISPEECH, False),
        ({"small": HUB_SMALL}, {k: {**v, "limit": 100} for k, v in LIBRISPEECH.items()}, True),  # a subset
        ({"small": HUB_SMALL}, {"test-clean": {"source": "embedded"}, "test-other": {"source": "noisy"}}, True),
        (None, None, False),  # no specs: nothing is numeric
    ],
    ids=["ct2", "small.en", "limit", "other-speech", "no-specs"],
)
def test_study_direction_only(models, corpora, numeric_size):
    df = study.compare(_summary("small"), "test-clean", "test-other", models=models, corpora=corpora)
    on_test_set = df[df.study_corpus != "(any)"]
    assert set(on_test_set["comparable"]) == {"direction-only"}
    assert on_test_set["difference"].isna().all() and on_test_set["ours"].notna().any()  # ours still shown
    size = df[df.study_corpus == "(any)"]
    assert set(size["comparable"]) == {"numeric" if numeric_size else "direction-only"}
    measured = size[size["ours"].notna()]
    assert len(measured) and measured["difference"].notna().all() == numeric_size
    md = study.comparison_markdown(df)
    for line in md.splitlines():
        if "| direction-only |" in line:
            assert line.rstrip().endswith("| (direction only) |")
            assert not any(cell.strip().startswith(("+", "-")) for cell in line.split("|")[-2:])


def test_study_default_config_is_direction_only(default_config):
    df = study.compare(_summary("base", ("clean", "noisy")), "clean", "noisy",
                       models=default_config["models"], corpora=default_config["corpora"])
    assert len(df) and set(df["comparable"]) == {"direction-only"}
    assert np.isnan(df["difference"].to_numpy(float)).all()


# --------------------------------------------------------------------------- the whole report


def test_write_report_end_to_end(tmp_path):
    from whisperquant.report.aggregate import write_report

    rng = np.random.default_rng(0)
    ids = [f"u{i:03d}" for i in range(40)]
    words = rng.integers(5, 20, len(ids))
    base_err = rng.binomial(words, 0.05)
    cells = []
    for scheme, lib, extra, size in (("fp32", "fp32", 0.0, 1e8), ("int8", "pytorch", 0.03, 4e7),
                                     ("junk", "hqq", 0.9, 1e7)):
        err = base_err + rng.binomial(words, extra)
        d = tmp_path / scheme
        d.mkdir()
        utt = pd.DataFrame({"id": ids, "ref_words": words, "substitutions": err, "deletions": 0, "insertions": 0,
                            "hits": words - np.minimum(err, words), "errors": err, "empty": 0,
                            "looping": (np.arange(len(ids)) < (3 if scheme == "junk" else 0)).astype(int)})
        utt.to_csv(d / "utts.tsv", sep="\t", index=False)
        score = {**SCORE, "n_utts": len(ids), "ref_words": int(words.sum()), "errors": int(err.sum()),
                 "wer": float(err.sum() / words.sum()), "looping_hyps": int(utt.looping.sum()), "empty_hyps": 0}
        for name, rec in (("quant", {**QUANT, "library": lib, "artifact_bytes": size}), ("timing", TIMING),
                          ("score", score)):
            (d / f"{name}.json").write_text(json.dumps(rec))
        # hypotheses: int8 says what fp32 says on 30 of 40 (twice only in case and punctuation, which
        # normalisation removes), junk on none
        hyps = {i: f"word {i} said" if scheme != "junk" else "loop loop" for i in ids}
        if scheme == "int8":
            hyps.update({i: "something else" for i in ids[30:]}, u000="Word u000, said.", u001="WORD U001 SAID")
        (d / "t.jsonl").write_text("".join(json.dumps({"id": i, "reference": "r", "hypothesis": h}) + "\n"
                                           for i, h in hyps.items()))
        cells.append({**CELL, "scheme": scheme, "corpus": "clean", **{k: str(d / f"{k}.json")
                      for k in ("quant", "timing", "score")}, "utts": str(d / "utts.tsv"),
                      "transcript": str(d / "t.jsonl")})
    out = tmp_path / "report"
    write_report(cells, [], out / "summary.csv", out / "summary.md", out / "plots", n_resamples=100, seed=0,
                 clean="clean", noisy=None, out_study=out / "study.csv", pareto_max_wer=0.5,
                 models={"small": {"source": "pypi_ct2"}}, corpora={"clean": {"source": "embedded"}})
    df = pd.read_csv(out / "summary.csv").set_index("scheme")
    assert {*NEW, "qoi_pct", "on_pareto_front"} <= set(df.columns)
    assert df.loc["fp32", "qoi_pct"] == 100 and df.loc["int8", "qoi_pct"] < 100
    assert df.loc["junk", "wer"] > 0.5 and not df.loc["junk", "on_pareto_front"]
    assert df.loc["int8", "on_pareto_front"] and df.loc["junk", "looping_hyps"] == 3
    assert df.same_as_fp32.tolist() == [40, 30, 0] and df.same_as_fp32_pct.tolist() == [100.0, 75.0, 0.0]
    assert df.speedup_vs_fp32.tolist() == [1.25] * 3 and df.speedup_vs_ct2_int8.isna().all()
    md = (out / "summary.md").read_text()
    assert "QoI %" in md and "= fp32 %" in md and "WER ≤ 50 %" in md
    assert "× CT2 int8 [95 % CI]" not in md  # no CTranslate2 int8 cell: no column for it
    assert "1.25 [1.20, 1.30]" in md and "**Host**: every cell was transcribed and timed on `amd-epyc-2c-" in md
    assert "| direction-only |" in md
    assert set(pd.read_csv(out / "study.csv")["comparable"]) == {"direction-only"}
    assert (out / "plots" / "size_vs_wer.png").stat().st_size > 5000


def test_a_random_weight_model_never_shows_a_wer_and_its_small_sizes_meet_the_study(tmp_path):
    """source: random rows keep size and speed, lose every accuracy figure; architecture small's compression
    is compared with the study's numerically (its tensors are Whisper-small's), its WER figures are not."""
    from whisperquant.report.aggregate import RANDOM_WEIGHTS, write_report

    cells = []
    for scheme, lib, size in (("fp32", "fp32", 9.67e8), ("quanto-w8", "quanto", 4.2e8)):
        d = tmp_path / scheme
        d.mkdir()
        pd.DataFrame({"id": ["u1", "u2"], "ref_words": [5, 5], "substitutions": [5, 5], "deletions": 0,
                      "insertions": 0, "hits": 0, "errors": [5, 5], "empty": 0, "looping": 0}).to_csv(
            d / "utts.tsv", sep="\t", index=False)
        for name, rec in (("quant", {**QUANT, "library": lib, "artifact_bytes": size}), ("timing", TIMING),
                          ("score", {**SCORE, "n_utts": 2, "ref_words": 10, "errors": 10, "wer": 1.0})):
            (d / f"{name}.json").write_text(json.dumps(rec))
        cells.append({**CELL, "model": "small-shapes", "scheme": scheme, "corpus": "clean",
                      **{k: str(d / f"{k}.json") for k in ("quant", "timing", "score")}, "utts": str(d / "utts.tsv")})
    out = tmp_path / "report"
    models = {"small-shapes": {"source": "random", "architecture": "small", "tokenizer_from": "base"}}
    write_report(cells, [], out / "summary.csv", out / "summary.md", out / "plots", n_resamples=50, seed=0,
                 clean="clean", noisy=None, out_study=out / "study.csv", models=models,
                 corpora={"clean": {"source": "embedded"}})
    df = pd.read_csv(out / "summary.csv").set_index("scheme")
    assert df.wer.isna().all() and df.wer_ci_low.isna().all() and df.errors.isna().all()
    assert (df.reason == RANDOM_WEIGHTS).all() and (df.status == "ok").all()
    assert df.loc["quanto-w8", "compression_pct"] == pytest.approx(100 * (1 - 4.2e8 / 9.67e8))
    assert df.rtfx.notna().all()
    study = pd.read_csv(out / "study.csv")
    size = study[study.metric == "size reduction vs fp32 %"].set_index("scheme")
    assert size.loc["quanto-w8", "comparable"] == "numeric"
    assert size.loc["quanto-w8", "difference"] == pytest.approx(100 * (1 - 4.2e8 / 9.67e8) - 57)
    assert set(study[study.metric != "size reduction vs fp32 %"].comparable) <= {"direction-only"}


def _cells_on(tmp_path, hosts: dict[str, dict]) -> list[dict]:
    """fp32, quanto-w8 and ct2-int8 cells of one model and corpus, each transcribed on the host given."""
    cells = []
    quants = {"fp32": {**QUANT, "library": "fp32"}, "quanto-w8": QUANT,
              "ct2-int8": {**QUANT, "library": "ctranslate2", "params": {"compute_type": "int8"}}}
    ratios = {"fp32": [1.0] * 6, "quanto-w8": [0.9] * 6, "ct2-int8": [1.8] * 6}
    for scheme, host in hosts.items():
        d = tmp_path / scheme
        d.mkdir(parents=True)
        pd.DataFrame({"id": ["u1", "u2"], "ref_words": [5, 5], "substitutions": [0, 1], "deletions": 0,
                      "insertions": 0, "hits": [5, 4], "errors": [0, 1], "empty": 0, "looping": 0}).to_csv(
            d / "utts.tsv", sep="\t", index=False)
        timing = {**TIMING, "host": host, "pair_ratios": ratios[scheme], "speedup_vs_fp32": ratios[scheme][0]}
        for name, rec in (("quant", quants[scheme]), ("timing", timing),
                          ("score", {**SCORE, "n_utts": 2, "ref_words": 10, "errors": 1, "wer": 0.1})):
            (d / f"{name}.json").write_text(json.dumps(rec))
        cells.append({**CELL, "scheme": scheme, "corpus": "clean", "utts": str(d / "utts.tsv"),
                      **{k: str(d / f"{k}.json") for k in ("quant", "timing", "score")}})
    return cells


def test_two_hosts_in_one_table_are_said_and_speed_is_compared_within_a_host(tmp_path):
    """A grid whose cells ran on two kinds of node (a mixed SLURM partition): the report says so at the top,
    shows the host of each row, and forms × CT2 int8 only between cells of the same host."""
    from whisperquant.report.aggregate import write_report

    avx512 = {**HOST, "cpu_model": "Intel Xeon", "cpu_vendor": "GenuineIntel",
              "isa": ["avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "amx_int8"]}
    one = _cells_on(tmp_path / "one", {"fp32": HOST, "quanto-w8": HOST, "ct2-int8": HOST})
    out = tmp_path / "r1"
    write_report(one, [], out / "s.csv", out / "s.md", out / "plots", n_resamples=50, seed=0, clean="clean",
                 noisy=None)
    df = pd.read_csv(out / "s.csv").set_index("scheme")
    assert df.loc["quanto-w8", "speedup_vs_ct2_int8"] == pytest.approx(0.5)  # 0.9 / 1.8, both against fp32
    assert "mixes" not in (out / "s.md").read_text()

    mixed = _cells_on(tmp_path / "mixed", {"fp32": HOST, "quanto-w8": avx512, "ct2-int8": HOST})
    out = tmp_path / "r2"
    write_report(mixed, [], out / "s.csv", out / "s.md", out / "plots", n_resamples=50, seed=0, clean="clean",
                 noisy=None)
    df = pd.read_csv(out / "s.csv").set_index("scheme")
    assert df.host.nunique() == 2 and df.loc["quanto-w8", "host_isa"] == "avx2+avx512f+avx512_vnni+amx_tile+amx_int8"
    assert pd.isna(df.loc["quanto-w8", "speedup_vs_ct2_int8"])  # another host than the CTranslate2 cell's
    assert df.loc["fp32", "speedup_vs_ct2_int8"] == pytest.approx(1 / 1.8, rel=1e-3)  # same host: formed
    assert df.loc["quanto-w8", "speedup_vs_fp32"] == pytest.approx(0.9)  # its own job's paired measurement
    md = (out / "s.md").read_text()
    head = md.split("## ")[0]
    assert "Warning: this table mixes 2 hosts" in head and "Intel Xeon" in head and "AMD EPYC" in head
    assert "| host | compute |" in md
