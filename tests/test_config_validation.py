"""Invalid configurations are refused before any job runs, with the offending key path in the message.

Each case mutates a copy of ``config/config.yaml`` and checks that the schema
(:func:`validate_schema`) or the cross-field rules (:func:`check_config`) name
the key path and what would be valid.  One case goes through ``snakemake -n``.
"""

from __future__ import annotations

import copy

import pytest
from whisperquant.config import ConfigError, check_config, validate_schema
from workflow_utils import small_config, snakemake, write_config

STATIC = {"library": "pytorch", "mode": "static"}


def _set(path: str, value):
    """A mutation setting ``a.b.c`` (keys split on '/', so model names may hold dots)."""

    def mutate(cfg):
        *parents, last = path.split("/")
        node = cfg
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[last] = value

    return mutate


def _drop(path: str):
    def mutate(cfg):
        *parents, last = path.split("/")
        node = cfg
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


def _all(*mutations):
    def mutate(cfg):
        for m in mutations:
            m(cfg)

    return mutate


# (id, mutation, key path the message must start with, words of what would be valid)
CASES = [
    ("wrong-type", _set("transcription/batch_size", "8"), "transcription.batch_size", ["integer"]),
    ("out-of-range", _set("transcription/batch_size", 0), "transcription.batch_size", ["minimum of 1"]),
    ("out-of-range-max", _set("corpora/noisy/snr_db", 100), "corpora.noisy.snr_db", ["maximum of 60"]),
    ("bad-enum", _set("grid/devices", ["tpu"]), "grid.devices[0]", ["'cpu'", "'cuda'"]),
    ("bad-type-exclusive", _set("transcription/exclusive", "yes"), "transcription.exclusive", ["boolean"]),
    ("missing-required-top", _drop("grid"), "grid", ["required"]),
    ("missing-required-nested", _drop("schemes/fp32/library"), "schemes.fp32.library", ["required"]),
    ("missing-noisy-seed", _drop("corpora/noisy/seed"), "corpora.noisy.seed", ["required", "noisy"]),
    ("unknown-top-level-key", _set("extra_key", 1), "extra_key", ["unknown key", "transcription"]),
    ("unknown-nested-key", _set("transcription/beam_size", 4), "transcription.beam_size",
     ["unknown key", "batch_size"]),
    ("bad-revision", _set("models/hub-tiny", {"source": "hub", "repo_id": "openai/whisper-tiny", "revision": "main"}),
     "models.hub-tiny.revision", ["40-hex-digit"]),
    ("unpinned-hub-model", _set("models/hub-tiny", {"source": "hub", "repo_id": "openai/whisper-tiny"}),
     "models.hub-tiny.revision", ["required", "hub"]),
    ("bad-sha256", _set("models/tiny.en/packages/0/sha256", "abc123"), "models.tiny.en.packages[0].sha256",
     ["64 lowercase hex"]),
    ("bad-file-spec", _set("models/tiny.en/files/config", "config.json"), "models.tiny.en.files.config",
     ["<package name>:<path"]),
    ("bad-scheme-name", _set("schemes/bad name", {"library": "fp32"}), "schemes.bad name", ["letters, digits"]),
    ("duplicate-grid-scheme", _set("grid/schemes", ["fp32", "fp32"]), "grid.schemes", ["'all'", "non-unique"]),
    ("unknown-grid-model", _set("grid/models", ["tiny.en", "large-v3"]), "grid.models[1]", ["tiny.en, base"]),
    ("unknown-grid-corpus", _set("grid/corpora", ["clean", "other"]), "grid.corpora[1]", ["clean, noisy"]),
    ("unknown-grid-scheme", _set("grid/schemes", ["fp32", "int3"]), "grid.schemes[1]",
     ["fp32, fp16, torch-dynamic-int8"]),
    ("no-fp32-baseline", _set("grid/schemes", ["torch-dynamic-int8", "bnb-nf4"]), "grid.schemes",
     ["fp32 baseline", "library: fp32"]),
    ("noisy-from-unknown", _set("corpora/noisy/from", "nowhere"), "corpora.noisy.from", ["unknown corpus"]),
    ("noisy-from-noisy", _set("corpora/noisier", {"source": "noisy", "from": "noisy", "snr_db": 0, "seed": 1}),
     "corpora.noisier.from", ["itself a noisy corpus", "clean one"]),
    ("static-without-calibration", _all(_set("schemes/static", STATIC), _set("calibration", {})),
     "calibration.corpus", ["needs a calibration set", "set: calibration"]),
    ("calibration-unknown-corpus", _set("calibration/corpus", "nope"), "calibration.corpus",
     ["unknown corpus", "clean, noisy, calibration"]),
    ("calibration-is-evaluation", _all(_set("schemes/static", STATIC),
                                       _set("grid/corpora", ["clean", "noisy", "calibration"])),
     "calibration.corpus", ["also an evaluation corpus"]),
    ("calibration-same-embedded-set", _all(_set("schemes/static", STATIC),
                                           _set("corpora/cal2", {"source": "embedded", "set": "eval"}),
                                           _set("calibration/corpus", "cal2")),
     "calibration.corpus", ["same embedded set 'eval'", "set: calibration"]),
    ("calibration-noisy-copy-of-eval", _all(_set("schemes/static", STATIC),
                                            _set("corpora/cal2", {"source": "noisy", "from": "clean", "snr_db": 0,
                                                                  "seed": 3}),
                                            _set("calibration/corpus", "cal2")),
     "calibration.corpus", ["utterances of evaluation corpus 'clean'"]),
    ("calibration-from-test-split", _all(_set("schemes/static", STATIC),
                                         _set("corpora/ls", {"source": "librispeech", "loader": "hf",
                                                             "split": "test-clean"}),
                                         _set("calibration/corpus", "ls")),
     "corpora.ls.split", ["dev-clean"]),
    ("report-unknown-corpus", _set("report/noisy_corpus", "dirty"), "report.noisy_corpus", ["unknown corpus"]),
    ("unknown-library", _set("schemes/tflite-int8", {"library": "tflite"}), "schemes.tflite-int8.library",
     ["bnb, ctranslate2, fp16, fp32, hqq, onnxruntime, openvino, pt2e, pytorch, quanto, torchao"]),
    ("bits-not-offered", _set("schemes/hqq-4bit-g64/bits", 5), "schemes.hqq-4bit-g64.bits", ["1, 2, 3, 4, 8"]),
    ("bnb-int4", _set("schemes/bnb-nf4/quant_type", "int4"), "schemes.bnb-nf4.quant_type", ["'nf4'", "'fp4'"]),
    ("bnb-double-quant-int8", _all(_set("schemes/bnb-nf4/quant_type", "int8"), _set("schemes/bnb-nf4/double_quant",
                                                                                    True)),
     "schemes.bnb-nf4.double_quant", ["nf4 and fp4"]),
    ("bnb-negative-threshold", _set("schemes/bnb-nf4/threshold", -1), "schemes.bnb-nf4.threshold", [">= 0"]),
    ("hqq-group-not-dividing", _set("schemes/hqq-4bit-g64/group_size", 256), "schemes.hqq-4bit-g64.group_size",
     ["d_model=384", "tiny.en"]),
    ("unknown-scheme-parameter", _set("schemes/torch-dynamic-int8/bits", 8), "schemes.torch-dynamic-int8.bits",
     ["unknown parameter", "granularity", "mode", "targets"]),
    ("bad-granularity", _set("schemes/torch-dynamic-int8/granularity", "per_row"),
     "schemes.torch-dynamic-int8.granularity", ["'per_tensor'", "'per_channel'"]),
    ("gptq-calibration-beyond-declared-memory",
     _all(_set("schemes/ov-gptq", {"library": "openvino", "compression": "int4_sym", "group_size": 64,
                                   "data": "gptq+se"}), _set("calibration/utterances", 200),
          _set("grid/schemes", ["fp32", "ov-gptq"])),
     "calibration.utterances", ["NNCF's GPTQ keeps", "tiny.en", "models.tiny.en.mem_mb", "3,000 MB"]),
    ("bad-targets-regex", _set("schemes/torch-dynamic-int8/targets", "(("), "schemes.torch-dynamic-int8.targets",
     ["regular expression"]),
]


def _check(cfg: dict) -> dict:
    validate_schema(cfg)
    return check_config(cfg)


def test_default_config_is_valid(default_config):
    from whisperquant.quantize import get_backend

    schemes = _check(copy.deepcopy(default_config))
    assert set(schemes) == set(default_config["schemes"])
    for name, resolved in schemes.items():  # full parameters: the backend's defaults filled in
        own = {"mixed"} & set(default_config["schemes"][name])  # a mixed-precision block is kept as given
        assert set(get_backend(resolved["library"]).parameters) | {"library", "targets"} | own == set(resolved), name
        assert resolved.get("mixed") == default_config["schemes"][name].get("mixed"), name


def test_schema_fills_defaults(default_config):
    cfg = copy.deepcopy(default_config)
    del cfg["transcription"]["max_new_tokens"]
    del cfg["report"]
    _check(cfg)
    assert cfg["transcription"]["max_new_tokens"] == 128
    assert cfg["transcription"]["exclusive"] is True
    assert cfg["transcription"]["timing"] == {"units": 1, "nice": -19, "min_pairs": 6, "max_pairs": 12,
                                              "target_halfwidth": 0.02, "max_s": 60}
    assert cfg["report"] == {"bootstrap_resamples": 1000, "bootstrap_unit": "utterance", "seed": 0,
                             "pareto_max_wer": 0.5}
    assert cfg["devices"] == {"cuda": {"available": "auto"}}
    assert cfg["resources_per_rule"] == {"runtime_minutes": 120}


@pytest.mark.parametrize(("mutate", "key", "valid"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_names_the_key(default_config, mutate, key, valid):
    cfg = copy.deepcopy(default_config)
    # The cases address one grid block (`grid.<key>`); the default config lists several.
    cfg["grid"] = {"models": ["tiny.en", "base"], "schemes": "all", "devices": ["cpu"], "corpora": ["clean", "noisy"]}
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        _check(cfg)
    msg = str(err.value)
    assert msg.startswith(f"{key}: "), msg
    for word in valid:
        assert word in msg, f"{word!r} not in {msg!r}"


def test_at_least_fifteen_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 15
    assert len({c[2] for c in CASES}) >= 15  # distinct key paths, too


def test_integer_for_a_float_parameter_is_that_float(default_config):
    """YAML's ``threshold: 6`` is the float 6.0 (and resolves exactly like ``6.0``: no rerun)."""
    cfg = copy.deepcopy(default_config)
    cfg["schemes"]["bnb-nf4"]["threshold"] = 6
    assert _check(cfg)["bnb-nf4"]["threshold"] == 6.0


def test_disjoint_ids_of_the_same_embedded_set_may_calibrate(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["schemes"]["static"] = dict(STATIC)
    cfg["corpora"]["clean"]["ids"] = ["librispeech-61-70968-0000", "librivox-0930"]
    cfg["corpora"]["cal2"] = {"source": "embedded", "set": "eval", "ids": ["librivox-0870"]}
    cfg["calibration"]["corpus"] = "cal2"
    _check(cfg)
    cfg["corpora"]["cal2"]["ids"].append("librivox-0930")
    with pytest.raises(ConfigError, match=r"^calibration\.corpus: .*same embedded set"):
        _check(cfg)


@pytest.mark.parametrize("split, ok", [("test-clean", False), ("test-other", False), ("dev-clean", True),
                                       ("dev-other", True)])
def test_a_librispeech_calibration_corpus_comes_from_a_dev_split(default_config, split, ok):
    """The guard of the corpus calibration.corpus names, before anything is built (LibriSpeech's one rule,
    librispeech.check_calibration_split)."""
    cfg = copy.deepcopy(default_config)
    cfg["schemes"]["static"] = dict(STATIC)
    cfg["corpora"]["ls-cal"] = {"source": "librispeech", "split": split, "loader": "hf", "revision": "a" * 40}
    cfg["calibration"]["corpus"] = "ls-cal"
    if ok:
        _check(cfg)
    else:
        with pytest.raises(ConfigError, match=r"^corpora\.ls-cal\.split: calibration corpus 'ls-cal': "):
            _check(cfg)


def test_snakemake_refuses_before_building_the_dag(tmp_path, default_config, download_cache):
    """Through the real workflow, once: a cross-field error (both layers raise ConfigError, caught by one
    clause of workflow/rules/common.smk; the schema's cases run in-process above)."""
    cfg = small_config(default_config, download_cache)
    cfg["schemes"]["torch-dynamic-int8"]["granularity"] = "per_row"
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "invalid configuration: schemes.torch-dynamic-int8.granularity: " in out, out[-3000:]
    assert "Building DAG" not in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_grid_block_lists_name_the_block(default_config):
    cfg = copy.deepcopy(default_config)
    assert isinstance(cfg["grid"], list)
    cfg["grid"][1]["schemes"] = ["fp32", "int3"]
    with pytest.raises(ConfigError, match=r"^grid\[1\]\.schemes\[1\]: unknown scheme 'int3'"):
        _check(cfg)
    cfg = copy.deepcopy(default_config)
    cfg["grid"][-1]["devices"] = ["tpu"]
    last = len(cfg["grid"]) - 1
    with pytest.raises(ConfigError, match=rf"^grid\[{last}\]\.devices\[0\]: 'tpu' is not valid"):
        _check(cfg)


def test_the_workflow_parses_without_a_core_count(tmp_path, default_config):
    """A cluster executor (profiles/slurm) sets no total core count, so no rule may read ``workflow.cores``.

    ``--summary`` under ``--workflow-profile none`` parses every rule with ``cores`` unset, as the SLURM
    plugin does; a rule whose ``threads:`` reads ``workflow.cores`` fails here with Snakemake's
    "Workflow requires a total number of cores to be defined".
    """
    write_config(tmp_path, default_config)
    proc = snakemake(tmp_path, "--summary", "--workflow-profile", "none", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "total number of cores" not in out
    assert "results/report/summary.csv" in out
