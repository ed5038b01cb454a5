"""The CTranslate2 -> transformers conversion is lossless."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file
from whisperquant.models.ct2 import CT2FormatError, read_model_bin, to_ct2_variables, to_transformers_state_dict


@pytest.fixture(scope="module")
def ct2_model(tiny_en_ct2_dir):
    return read_model_bin(tiny_en_ct2_dir / "model.bin")


def test_every_tensor_matches_the_ctranslate2_source(ct2_model, tiny_en):
    state = load_file(str(tiny_en / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in state.values())
    back = to_ct2_variables(state)
    weights = {k: v for k, v in ct2_model.variables.items() if v.ndim > 0 and v.dtype.kind == "f"}
    assert set(back) == set(weights), set(back) ^ set(weights)
    for name, src in weights.items():
        # float16 -> float32 -> float16 must give back the identical bits.
        assert back[name].astype(np.float16).tobytes() == src.tobytes(), name
        assert np.array_equal(back[name], src.astype(np.float32)), name


def test_config_dimensions_come_from_shapes(tiny_en):
    import json

    cfg = json.loads((tiny_en / "config.json").read_text())
    assert (cfg["d_model"], cfg["encoder_layers"], cfg["decoder_layers"], cfg["vocab_size"]) == (384, 4, 4, 51864)
    assert cfg["encoder_attention_heads"] == 6


def test_greedy_tokens_equal_ctranslate2(tiny_en, tiny_en_ct2_dir, two_clip_corpus):
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch
    from transformers import WhisperProcessor
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import load_corpus
    from whisperquant.quantize.modules import load_fp32

    model = load_fp32(tiny_en)
    processor = WhisperProcessor.from_pretrained(str(tiny_en))
    ct = ctranslate2.models.Whisper(str(tiny_en_ct2_dir), device="cpu", compute_type="float32")
    prompt = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    for utt in load_corpus(two_clip_corpus):
        feats = processor.feature_extractor(load_audio(utt.audio_path), sampling_rate=16000,
                                            return_tensors="pt").input_features
        with torch.no_grad():
            ours = model.generate(feats, do_sample=False, num_beams=1, max_new_tokens=100)[0].tolist()
        theirs = ct.generate(ctranslate2.StorageView.from_array(feats.numpy()), [prompt], beam_size=1,
                             max_length=100)[0].sequences_ids[0]
        eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        ours = [t for t in ours if t < eot]  # drop the prompt/special tokens transformers returns
        assert ours == theirs, utt.id
        assert len(ours) > 5


def test_refuses_truncated_and_foreign_files(tmp_path, tiny_en_ct2_dir):
    data = (tiny_en_ct2_dir / "model.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_model_bin(tmp_path / "short.bin")
    (tmp_path / "junk.bin").write_bytes(b"\x06\x00\x00\x00\x0b\x00NotWhisper\x00" + b"\x00" * 16)
    with pytest.raises(CT2FormatError, match="not a Whisper model"):
        read_model_bin(tmp_path / "junk.bin")


def test_nonzero_key_bias_is_refused(ct2_model):
    from whisperquant.models.ct2 import CT2Model

    variables = dict(ct2_model.variables)
    name = "encoder/layer_0/self_attention/linear_0/bias"
    bias = variables[name].copy()
    bias[len(bias) // 3] = 1.0  # inside the k slice
    variables[name] = bias
    with pytest.raises(CT2FormatError, match="key bias is not zero"):
        to_transformers_state_dict(CT2Model(ct2_model.spec_name, ct2_model.revision, variables, ct2_model.aliases))
