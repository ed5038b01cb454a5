"""whisper.cpp as a deployment runtime: our ggml writer, ggml's quantiser, whisper.cpp's greedy decoder.

On tiny.en's real weights and the two real clips: the f32 file holds the checkpoint exactly
and the mel filters are OpenAI's bit for bit; each type is built here, then reloaded and
decoded in a fresh process and held to a word-error bound against transformers fp32 (an
artifact of random blocks fails it: checked); the K-quants are refused on tiny.en's 384-wide
rows (in config validation and, where the config gives no dims, as a failed row); whisper.cpp
1.8.5's abort on an f32 file becomes a failed row with its reason, and the job lives on.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from workflow_utils import worker_threads

REPO = Path(__file__).resolve().parents[1]
#: the openai-whisper source distribution, for its whisper/assets/mel_filters.npz
OPENAI_WHISPER = {"registry": "pypi", "name": "openai-whisper", "version": "20250625", "kind": "sdist",
                  "sha256": "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"}
#: errors over transformers fp32's on the two clips (25 reference words) each type may add
ERROR_BOUND = {"f16": 0, "q8_0": 1, "q5_1": 2, "q5_0": 2, "q4_0": 3}


@pytest.fixture(scope="module")
def clips(tiny_en, two_clip_corpus, tmp_path_factory):
    """(utterances, log-mel features saved for a child process, transformers fp32's hypotheses)."""
    import torch
    from transformers import WhisperProcessor
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import generate_kwargs_for, load_corpus
    from whisperquant.quantize.modules import load_fp32

    torch.set_num_threads(worker_threads())
    processor = WhisperProcessor.from_pretrained(str(tiny_en))
    utts = load_corpus(two_clip_corpus)
    feats = processor.feature_extractor([load_audio(u.audio_path, u.id) for u in utts], sampling_rate=16000,
                                        return_tensors="pt").input_features
    path = tmp_path_factory.mktemp("features") / "features.npy"
    np.save(path, feats.numpy())
    model = load_fp32(tiny_en)
    with torch.no_grad():
        tokens = model.generate(feats, **generate_kwargs_for(model, "en", 64))
    return utts, path, processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)


def _build(tiny_en, weight_type: str, out: Path):
    from whisperquant.quantize import get_backend

    backend = get_backend("whispercpp")
    params = backend.resolve("test", {"type": weight_type})
    backend.build(tiny_en, params, None, out)
    return backend, params


_CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from whisperquant.models.transformers_import import hide_unused_integrations
hide_unused_integrations("whispercpp")  # as the transcription job does
from transformers import WhisperTokenizer
from whisperquant.evaluate.transcribe import generate_kwargs_for
from whisperquant.quantize import get_backend
model_dir, params, artifact, features = Path(sys.argv[2]), json.loads(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
model = get_backend("whispercpp").load(model_dir, params, artifact, "cpu")
tokens = model.generate(np.load(features), **generate_kwargs_for(model, "en", 64))
print(json.dumps(WhisperTokenizer.from_pretrained(str(model_dir)).batch_decode(tokens, skip_special_tokens=True)))
"""


def _decode_in_fresh_process(tiny_en, params: dict, artifact: Path, features: Path) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(REPO / "workflow"), str(tiny_en), json.dumps(params),
                           str(artifact), str(features)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _errors(utts, hyps):
    from whisperquant.evaluate.scoring import corpus_errors

    return corpus_errors((u.reference, h) for u, h in zip(utts, hyps, strict=True))


def test_mel_filters_are_openais_bit_for_bit(download_cache):
    from whisperquant.data.fetch import Artifact, fetch, read_member
    from whisperquant.models.ggml import mel_filters

    sdist = fetch(Artifact.from_config(OPENAI_WHISPER), download_cache)
    npz = np.load(io.BytesIO(read_member(sdist, "openai_whisper-20250625/whisper/assets/mel_filters.npz")))
    for n_mels in (80, 128):
        ours = mel_filters(n_mels)
        assert ours.dtype == np.float32 and np.array_equal(ours, npz[f"mel_{n_mels}"]), n_mels


def test_f32_file_holds_the_checkpoint_exactly_and_f16_rounds_it_once(tiny_en, tmp_path):
    from safetensors.numpy import load_file
    from whisperquant.models.ggml import read_model, read_tensor, transformers_name

    state = load_file(str(tiny_en / "model.safetensors"))
    for weight_type in ("f32", "f16"):
        backend, _ = _build(tiny_en, weight_type, tmp_path / weight_type)
        path = tmp_path / weight_type / "ggml-model.bin"
        stored = read_model(path)
        assert stored.weight_type == weight_type and stored.hparams["n_vocab"] == 51864
        assert len(stored.tensors) == len(state) - ("proj_out.weight" in state)  # the tied projection is not stored
        for info in stored.tensors.values():
            want = state[transformers_name(info.name)].astype(np.float32).reshape(info.shape)
            got = read_tensor(path, info)
            assert np.array_equal(got, want.astype(got.dtype)), info.name  # f32 exact; f16 one rounding
            if info.name.startswith("encoder.conv") and info.name.endswith("weight"):
                assert info.type == weight_type  # f16 kernels in every file but f32
        sizes = backend.sizes(tmp_path / weight_type, [])
        # tiny.en's 37,760,256 parameters (the tied embedding once) at 4 or 2 bytes; the 1-D tensors, the
        # positional tables and the convolution biases stay float32 in the f16 file
        if weight_type == "f32":
            assert sizes["param_bytes"] == 4 * 37_760_256
        else:
            assert 2 * 37_760_256 < sizes["param_bytes"] < 2 * 37_760_256 + 2_000_000
        assert sizes["artifact_bytes"] > sizes["param_bytes"]  # + header, mel filters, vocabulary


@pytest.mark.parametrize("weight_type", list(ERROR_BOUND))
def test_each_type_reloads_in_a_fresh_process_within_its_bound_of_fp32(weight_type, tiny_en, clips, tmp_path):
    from whisperquant.quantize.modules import linear_names

    utts, features, reference = clips
    backend, params = _build(tiny_en, weight_type, tmp_path)
    hyps = _decode_in_fresh_process(tiny_en, params, tmp_path, features)
    fp32, got = _errors(utts, reference), _errors(utts, hyps)
    assert got.errors <= fp32.errors + ERROR_BOUND[weight_type], (hyps, reference)
    assert all(h.strip() for h in hyps)
    names, _ = linear_names(tiny_en, params["targets"])
    sizes = backend.sizes(tmp_path, names)
    bits = {"f16": 16, "q8_0": 8.5, "q5_1": 6, "q5_0": 5.5, "q4_0": 4.5}[weight_type]
    # the target Linears' 16,515,072 weights at the type's bits per weight (block scales included) and
    # their 29,184 biases in float32: 48 square 384 x 384 matrices and 16 of 384 x 1536 in 4 + 4 layers
    assert sizes["quantized_module_bytes"] == 16_515_072 * bits / 8 + 4 * 29_184, sizes


def test_an_artifact_of_random_blocks_fails_the_bound(tiny_en, clips, tmp_path):
    """The bound above is not loose enough to pass garbage: q8_0 blocks of random bytes in every Linear
    (scales included) decode to a hypothesis far outside it -- or to a failed load, also a failure."""
    from whisperquant.models.ggml import read_model

    utts, features, reference = clips
    _, params = _build(tiny_en, "q8_0", tmp_path)
    path = tmp_path / "ggml-model.bin"
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for info in read_model(path).tensors.values():
        if info.type == "q8_0" and ".blocks." in info.name:
            blocks = rng.integers(0, 256, info.nbytes, dtype=np.uint8).reshape(-1, 34)
            blocks[:, :2] = np.frombuffer(np.float16(0.05).tobytes(), dtype=np.uint8)  # finite scales
            data[info.offset : info.offset + info.nbytes] = blocks.tobytes()
    path.write_bytes(bytes(data))
    hyps = _decode_in_fresh_process(tiny_en, params, tmp_path, features)
    assert _errors(utts, hyps).errors > _errors(utts, reference).errors + max(ERROR_BOUND.values()), hyps


def test_k_quants_are_refused_on_tiny_en_with_the_reason(tiny_en, default_config, tmp_path):
    import copy

    from whisperquant.config import ConfigError, check_config, validate_schema
    from whisperquant.jobs import quantize_job
    from whisperquant.quantize import SchemeError, get_backend

    backend = get_backend("whispercpp")
    for weight_type in ("q4_K", "q5_K"):
        params = backend.resolve("k", {"type": weight_type})
        with pytest.raises(SchemeError, match=r"^schemes\.k\.type: ggml's q\d_K stores each row in super-blocks "
                                              r"of 256 values; this model's rows of d_model 384 values are not "
                                              r"a multiple of 256$"):
            backend.check_model("k", params, {"d_model": 384, "ffn_dim": 1536})
        backend.check_model("k", params, {"d_model": 512, "ffn_dim": 2048})  # base: allowed
    # in a config: refused before anything runs, naming the scheme and the model
    cfg = copy.deepcopy(default_config)
    cfg["grid"] = {"models": ["tiny.en"], "schemes": ["fp32", "ggml-q4_K"], "devices": ["cpu"], "corpora": ["clean"]}
    validate_schema(cfg)
    with pytest.raises(ConfigError, match=r"schemes\.ggml-q4_K\.type: .*256.* of model 'tiny\.en'"):
        check_config(cfg)
    # a model whose config gives no dims: the quantize job writes a failed record with the reason
    out = tmp_path / "ggml-q4_K"
    quantize_job("tiny.en", tiny_en, "ggml-q4_K", {"library": "whispercpp", **backend.resolve("k", {"type": "q4_K"})},
                 out, None, None, tmp_path / "q.log")
    record = json.loads((tmp_path / "ggml-q4_K.json").read_text())
    assert record["status"] == "failed"
    assert "super-blocks of 256 values" in record["reason"] and "384" in record["reason"]


def test_whisper_cpp_abort_on_an_f32_file_is_a_row_with_its_reason(tiny_en, two_clip_corpus, tmp_path):
    """whisper.cpp 1.8.5 loads an f32 file, then aborts in the encoder's first convolution (ggml_conv_1d
    builds a float16 im2col, whose CPU kernel asserts a float16 kernel): the load check's child process
    takes the abort, the job writes a failed row naming it and returns."""
    from whisperquant.jobs import quantize_job, transcribe_job
    from whisperquant.quantize import get_backend

    params = {"library": "whispercpp", **get_backend("whispercpp").resolve("f32", {"type": "f32"})}
    art = tmp_path / "ggml-f32"
    quantize_job("tiny.en", tiny_en, "ggml-f32", params, art, None, None, tmp_path / "q.log")
    assert json.loads((tmp_path / "ggml-f32.json").read_text())["status"] == "ok"
    transcribe_job("tiny.en", tiny_en, "ggml-f32", params, art, "cpu", two_clip_corpus, tmp_path / "t.jsonl",
                   tmp_path / "t.timing.json", {"language": "en", "max_new_tokens": 16, "batch_size": 2}, 1,
                   tmp_path / "t.log", code="test")
    timing = json.loads((tmp_path / "t.timing.json").read_text())
    assert timing["status"] == "failed", timing
    assert "whisper.cpp crashed (SIGABRT)" in timing["reason"] and "GGML_ASSERT" in timing["reason"], timing
    assert (tmp_path / "t.jsonl").read_text() == ""


def test_a_file_that_is_not_whisper_cpps_is_refused_before_loading(tiny_en, tmp_path):
    from whisperquant.quantize import LibraryLimitation

    backend, params = _build(tiny_en, "q8_0", tmp_path)
    path = tmp_path / "ggml-model.bin"
    path.write_bytes(path.read_bytes()[:-1000])  # truncated in the last tensor
    with pytest.raises(LibraryLimitation, match=r"not a file whisper\.cpp loads: .*truncated"):
        backend.load(tiny_en, params, tmp_path, "cpu")


def test_parameters_and_devices(tiny_en):
    from whisperquant.quantize import SchemeError, get_backend

    backend = get_backend("whispercpp")
    with pytest.raises(SchemeError, match=r"^schemes\.x\.type: 'q3_K' is not offered"):
        backend.resolve("x", {"type": "q3_K"})
    with pytest.raises(SchemeError, match=r"^schemes\.x\.targets: whisper\.cpp stores every Linear"):
        backend.resolve("x", {"type": "q8_0", "targets": "fc1"})
    params = backend.resolve("x", {})
    assert params == {"type": "q8_0", "flash_attn": True, "targets": params["targets"]}
    assert "CPU only" in backend.unsupported_reason(params, "cuda")
    assert backend.unsupported_reason(params, "cpu") is None
    assert backend.compute_dtype(params, "cpu") == "int8" and backend.bits(params) == 8.0
