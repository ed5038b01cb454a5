"""The deployment runtimes (CTranslate2, ONNX Runtime, OpenVINO, and PyTorch's exported PT2E graphs) on real
weights and real speech.

Each engine builds its artifact from tiny.en's fp32 checkpoint and decodes the two
real clips; its float32 cell must give transformers fp32's tokens exactly (the same
prompt, suppression lists and ``max_new_tokens`` cap), its 8-bit cell stay within
one word error of them, and its sizes account for every stored byte.  Then the
engines run through Snakemake like any other library.
"""

from __future__ import annotations

import pytest
from workflow_utils import package_env, worker_threads

FLOAT = {"ctranslate2": {"compute_type": "float32"}, "onnxruntime": {"quantization": "none"},
         "openvino": {"compression": "none"}}
INT8 = {"ctranslate2": {"compute_type": "int8"}, "onnxruntime": {"quantization": "dynamic"},
        "openvino": {"compression": "int8_asym"}}


@pytest.fixture(scope="module")
def clips(tiny_en, two_clip_corpus):
    import torch
    from transformers import WhisperProcessor
    from whisperquant.data.audio import load_audio
    from whisperquant.evaluate.transcribe import load_corpus

    torch.set_num_threads(worker_threads())
    processor = WhisperProcessor.from_pretrained(str(tiny_en))
    utts = load_corpus(two_clip_corpus)
    feats = processor.feature_extractor([load_audio(u.audio_path, u.id) for u in utts], sampling_rate=16000,
                                        return_tensors="pt").input_features
    return processor, utts, feats


@pytest.fixture(scope="module")
def reference(tiny_en, clips):
    """transformers fp32's tokens for the two clips, full length and capped at 5 new tokens."""
    import torch
    from whisperquant.evaluate.transcribe import generate_kwargs_for
    from whisperquant.quantize.modules import load_fp32

    processor, _, feats = clips
    model = load_fp32(tiny_en)
    out = {}
    for cap in (64, 5):
        with torch.no_grad():
            tokens = model.generate(feats, **generate_kwargs_for(model, "en", cap))
        out[cap] = processor.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    return out


@pytest.fixture(scope="module")
def exported(tiny_en, tmp_path_factory):
    """tiny.en's fp32 ONNX graphs, exported once for the module as the workflow's rule ``export_graphs`` does
    once per model: every ONNX Runtime and OpenVINO build here reads them (``graphs=``), none writes them
    (:func:`_untouched`)."""
    from whisperquant.models.onnx_export import export_checkpoint

    out = tmp_path_factory.mktemp("graphs")
    export_checkpoint(tiny_en, out)
    _EXPORTED_MTIME[out] = out.stat().st_mtime_ns
    return out


_EXPORTED_MTIME: dict = {}


def _untouched(graphs) -> None:
    """No build wrote into the shared export, not even a file it deleted again (ONNX Runtime's quantizers
    write ``<graph>-inferred.onnx`` beside their input): in the workflow, concurrent builds of one model
    read the same folder.  Creating or deleting a file changes the folder's mtime."""
    assert graphs.stat().st_mtime_ns == _EXPORTED_MTIME[graphs], f"a build wrote into {graphs}"


def _build(library: str, spec: dict, tiny_en, out_dir, graphs=None):
    from whisperquant.quantize import get_backend
    from whisperquant.quantize.modules import linear_names

    backend = get_backend(library)
    params = backend.resolve("test", spec)
    backend.build(tiny_en, params, None, out_dir, **({"graphs": graphs} if backend.uses_graphs else {}))
    if graphs is not None and backend.uses_graphs:
        _untouched(graphs)
    names, _ = linear_names(tiny_en, params["targets"])
    return backend, params, backend.sizes(out_dir, names)


@pytest.fixture(scope="module")
def built(tiny_en, exported, tmp_path_factory):
    """``built(library, spec)``: (artifact directory, backend, params, sizes), each built once for the module.

    The float32 artifacts serve both the token-for-token test and the int8 tests' size baselines, ONNX
    Runtime's int8 artifact both its int8 test and the pre-packing test; the tests only read them.
    """
    cache: dict[tuple, tuple] = {}

    def get(library: str, spec: dict) -> tuple:
        key = (library, tuple(sorted(spec.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"{library}-built")
            cache[key] = (out, *_build(library, spec, tiny_en, out, exported))
        return cache[key]

    return get


def _decode(backend, params, tiny_en, artifact, clips, cap: int) -> list[str]:
    from whisperquant.evaluate.transcribe import generate_kwargs_for

    processor, _, feats = clips
    model = backend.load(tiny_en, params, artifact, "cpu")
    return processor.tokenizer.batch_decode(model.generate(feats, **generate_kwargs_for(model, "en", cap)),
                                            skip_special_tokens=True)


# :func:`_decode` in a second interpreter that has never built anything: what it reads is the artifact alone.
_FRESH_DECODE = """
import json, sys
from pathlib import Path
from whisperquant.models.transformers_import import hide_unused_integrations
library, params, base, artifact, features, cap = json.loads(sys.argv[1])
hide_unused_integrations(library)  # as the transcription job does
import numpy as np, torch
from transformers import WhisperProcessor
from whisperquant.evaluate.transcribe import generate_kwargs_for
from whisperquant.quantize import get_backend
torch.set_num_threads(int(sys.argv[2]))
model = get_backend(library).load(Path(base), params, Path(artifact), "cpu")
tokens = model.generate(torch.from_numpy(np.load(features)), **generate_kwargs_for(model, "en", cap))
print(json.dumps(WhisperProcessor.from_pretrained(base).tokenizer.batch_decode(tokens, skip_special_tokens=True)))
"""


def _decode_in_a_fresh_process(library: str, params: dict, tiny_en, artifact, clips, cap: int) -> list[str]:
    """The artifact reloaded and decoded by a new Python process, as a transcription job reads it."""
    import json
    import subprocess
    import sys

    import numpy as np

    _, _, feats = clips
    features = artifact.parent / f"{artifact.name}-features.npy"
    np.save(features, feats.numpy())
    env = package_env()
    job = json.dumps([library, params, str(tiny_en), str(artifact), str(features), cap])
    proc = subprocess.run([sys.executable, "-c", _FRESH_DECODE, job, str(worker_threads())], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("library", sorted(FLOAT))
def test_float32_engine_matches_transformers_token_for_token(library, tiny_en, clips, reference, built):
    artifact, backend, params, sizes = built(library, FLOAT[library])
    assert _decode(backend, params, tiny_en, artifact, clips, 64) == reference[64]
    assert _decode(backend, params, tiny_en, artifact, clips, 5) == reference[5]  # the same max_new_tokens cap
    # float32 everywhere: the stored tensors are tiny.en's 37.8 M parameters at 4 bytes (the tied
    # embedding once), within the few KB of shape constants a graph adds
    n_params = 37_760_256
    assert abs(sizes["param_bytes"] - 4 * n_params) < 40_000, sizes
    assert sizes["artifact_bytes"] >= sizes["param_bytes"]
    assert 0 < sizes["quantized_module_bytes"] < sizes["param_bytes"]


@pytest.mark.parametrize("library", sorted(INT8))
def test_int8_engine_is_close_to_fp32_and_smaller(library, tiny_en, clips, reference, built):
    from whisperquant.evaluate.scoring import corpus_errors

    artifact, backend, params, sizes = built(library, INT8[library])
    *_, fp32_sizes = built(library, FLOAT[library])
    hyps = _decode(backend, params, tiny_en, artifact, clips, 64)
    _, utts, _ = clips
    fp32 = corpus_errors((u.reference, h) for u, h in zip(utts, reference[64], strict=True))
    q = corpus_errors((u.reference, h) for u, h in zip(utts, hyps, strict=True))
    assert q.errors <= fp32.errors + 1, (hyps, reference[64])
    # the target Linears shrink to about a quarter; what no scheme quantises stays as it was
    ratio = sizes["quantized_module_bytes"] / fp32_sizes["quantized_module_bytes"]
    assert 0.24 < ratio < 0.30, (sizes, fp32_sizes)
    if library == "ctranslate2":  # CTranslate2 also stores the embedding and convolutions in int8
        assert sizes["float_param_bytes"] < 0.3 * fp32_sizes["float_param_bytes"]  # positions stay float
    else:
        assert abs(sizes["float_param_bytes"] - fp32_sizes["float_param_bytes"]) < 40_000
    assert sizes["artifact_bytes"] < 0.7 * fp32_sizes["artifact_bytes"]


@pytest.mark.parametrize("library, spec", [("onnxruntime", {"quantization": "static"}),
                                           ("openvino", {"compression": "full_int8"})])
def test_static_engine_schemes_calibrate_and_decode(library, spec, tiny_en, clips, exported, tmp_path):
    """ONNX Runtime's QDQ static int8 and OpenVINO's nncf.quantize run on Whisper: calibrated on features
    (here the two clips themselves: the pipeline forbids that overlap, a unit test only checks the
    mechanics), int8 activations, and still transcribing."""
    from whisperquant.evaluate.scoring import corpus_errors
    from whisperquant.quantize import get_backend
    from whisperquant.quantize.modules import linear_names

    _, utts, feats = clips
    backend = get_backend(library)
    params = backend.resolve("test", spec)
    assert backend.needs_calibration(params) and backend.compute_dtype(params, "cpu") == "int8"
    backend.build(tiny_en, params, [feats], tmp_path, graphs=exported)
    _untouched(exported)
    hyps = _decode(backend, params, tiny_en, tmp_path, clips, 64)
    q = corpus_errors((u.reference, h) for u, h in zip(utts, hyps, strict=True))
    # still speech that follows the audio: per-tensor minmax int8 activations are no match for weight-only
    # int8.  ORT measured 9 errors in 25 words on an AVX-512 VNNI Intel CPU and 21 (9 words right) on an
    # AVX2-only AMD EPYC, fp32 none on either; a babbling decoder gets no word right and loops
    assert all(h.strip() for h in hyps) and q.hits >= 0.25 * q.ref_words, (q, hyps)
    assert q.insertions < 0.5 * q.ref_words, (q, hyps)
    names, _ = linear_names(tiny_en, params["targets"])
    sizes = backend.sizes(tmp_path, names)
    assert sizes["quantized_module_bytes"] < 0.3 * 66_177_024  # a quarter of the target Linears' fp32 bytes


@pytest.mark.parametrize("spec, bits, max_errors", [
    # GPTQ on the first decoder layer's Linears: on every target it cost 180 s of a two-worker suite
    ({"compression": "int4_sym", "group_size": 64, "data": "gptq+se", "targets": r"^model\.decoder\.layers\.0\."},
     4, 1),
    ({"compression": "int3_sym", "group_size": 64, "data": "se"}, 3, 20),
])
def test_nncf_data_aware_weight_compression_calibrates_stores_low_bits_and_decodes(spec, bits, max_errors, tiny_en,
                                                                                  clips, reference, exported,
                                                                                  tmp_path):
    """NNCF's GPTQ / AWQ with scale estimation on the exported graphs (GPTQ after the target MatMuls are
    re-expressed with a transposed weight): calibrated on features (here the clips themselves, mechanics
    only), saved as IR, read back and decoded by a new Python process, and still transcribing: at most ``max_errors``
    word errors more than fp32 on the two clips (25 words; fp32 makes none), the target Linears stored at
    ``bits`` per weight plus one float16 scale per group of 64.  Bounds: int4 GPTQ+SE measured 0 extra
    errors; 3 bits is hard on tiny.en (AWQ+SE, AWQ skipped, measured 17 errors, 14 of 25 words right, a
    short loop in the second clip), so its bound is what a broken artifact cannot meet: half the words
    right, at most 20 errors (a garbage decode gets none right and loops to the token cap)."""
    from whisperquant.evaluate.scoring import corpus_errors
    from whisperquant.quantize import get_backend
    from whisperquant.quantize.modules import linear_names, load_fp32, target_linears

    _, utts, feats = clips
    backend = get_backend("openvino")
    params = backend.resolve("test", spec)
    assert backend.needs_calibration(params)
    artifact = tmp_path / "artifact"
    backend.build(tiny_en, params, [feats], artifact, graphs=exported)
    _untouched(exported)
    hyps = _decode_in_a_fresh_process("openvino", params, tiny_en, artifact, clips, 64)
    fp32 = corpus_errors((u.reference, h) for u, h in zip(utts, reference[64], strict=True))
    q = corpus_errors((u.reference, h) for u, h in zip(utts, hyps, strict=True))
    assert q.errors <= fp32.errors + max_errors and q.hits >= 0.5 * q.ref_words, (q, hyps, reference[64])
    names, _ = linear_names(tiny_en, params["targets"])
    stored = backend.sizes(artifact, names)["quantized_module_bytes"]
    model = load_fp32(tiny_en)
    linears = [model.get_submodule(n) for n in target_linears(model, params["targets"])]
    weights = sum(m.weight.numel() for m in linears)
    biases = sum(m.bias.numel() for m in linears if m.bias is not None)
    expected = weights * (bits + 16 / 64) / 8 + 4 * biases  # packed values + a float16 scale per group of 64
    assert 0.9 * expected < stored < 1.25 * expected, (stored, expected)


def test_awq_that_matches_no_pattern_is_a_limitation_not_a_silent_round_to_nearest(tiny_en, clips, exported,
                                                                                    tmp_path):
    """NNCF's AWQ needs a MatMul fed by an activation or a Multiply; Whisper's graph has none, and NNCF
    then skips AWQ saying so only on stdout.  The scheme is refused with the reason (a ``failed`` row),
    not written as an artifact identical to round-to-nearest's under AWQ's name."""
    from whisperquant.quantize import LibraryLimitation, get_backend

    _, _, feats = clips
    backend = get_backend("openvino")
    params = backend.resolve("test", {"compression": "int4_sym", "group_size": 64, "data": "awq",
                                      "targets": r"^model\.decoder\.layers\.0\."})
    with pytest.raises(LibraryLimitation, match="NNCF's AWQ found none of its patterns"):
        backend.build(tiny_en, params, [feats], tmp_path, graphs=exported)


def test_a_calibration_sample_is_one_utterance_whose_decoder_call_sees_what_its_steps_saw(tiny_en, clips, exported):
    """Calibration samples for the graph runtimes: one utterance each, the decoder fed the whole greedy
    sequence at once.  Its self-attention keys and values (outputs of Linears at every position) equal
    the cache step-by-step greedy decoding built for that utterance, so a calibrating library meets the
    same activations as the evaluation, without a cache per step; a sample is made when it is reached."""
    import numpy as np
    from whisperquant.quantize.backends._graphs import (
        GraphSamples,
        empty_caches,
        fp32_calibration_samples,
        greedy_generate,
    )
    from whisperquant.quantize.backends.onnxruntime import _session_functions
    from whisperquant.quantize.engine import calibration_settings

    _, _, feats = clips
    encode, step, _ = _session_functions(exported)
    encoder, decoder = fp32_calibration_samples(tiny_en, encode, step, [feats], "test")
    assert isinstance(decoder, GraphSamples) and len(encoder) == len(decoder) == feats.shape[0]
    assert [s["input_features"].shape[0] for s in encoder] == [1] * feats.shape[0]

    settings = calibration_settings(tiny_en, [feats])
    batch = feats.numpy()
    seen = []

    def recording(ids, cache, cross):
        out = step(ids, cache, cross)
        seen.append(out[1])
        return out

    config = settings.pop("config")
    greedy_generate(encode, recording, batch, empty_caches(config, batch.shape[0]), **settings)
    stepwise_k, stepwise_v = seen[-1]
    for b, sample in enumerate(decoder):
        n = sample["input_ids"].shape[1]
        assert sample["self_k"].shape[3] == 0 and n > len(settings["prompt"])
        _, (k, v) = step(sample["input_ids"], (sample["self_k"], sample["self_v"]),
                         (sample["cross_k"], sample["cross_v"]))
        assert np.allclose(k[:, 0], stepwise_k[:, b, :, :n], atol=1e-4)
        assert np.allclose(v[:, 0], stepwise_v[:, b, :, :n], atol=1e-4)


def test_gptq_transposition_computes_the_same_product(clips, exported):
    """The re-expressed MatMuls (``x @ W`` with ``W`` stored transposed) give the fp32 graph's outputs."""
    import numpy as np
    import openvino as ov
    from whisperquant.quantize.backends._graphs import onnx_linear_nodes
    from whisperquant.quantize.backends.openvino import _weight_transposed

    _, _, feats = clips
    targets, _ = onnx_linear_nodes(exported / "encoder.onnx", r"^model\.encoder\.layers\.\d+\.")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    plain = core.compile_model(ov.convert_model(str(exported / "encoder.onnx")), "CPU", config)
    turned_graph = _weight_transposed(ov.convert_model(str(exported / "encoder.onnx")), targets)
    turned_targets = [op for op in turned_graph.get_ops()
                      if op.get_type_name() == "MatMul" and op.get_friendly_name() in set(targets)]
    assert len(turned_targets) == len(targets) > 0
    assert all(op.get_attributes()["transpose_b"] for op in turned_targets)
    turned = core.compile_model(turned_graph, "CPU", config)
    x = {"input_features": feats.numpy()}
    a, b = plain(x)[0], turned(x)[0]
    assert np.allclose(a, b, atol=1e-4), float(np.abs(a - b).max())


def test_pt2e_static_int8_is_close_to_fp32_and_stores_int8(tiny_en, clips, reference, tmp_path):
    """PyTorch's PT2E static flow (torch.export, X86InductorQuantizer, histogram-calibrated per-tensor inputs,
    per-channel int8 weights, float outputs) on both exported graphs: within one word error of fp32 on the
    real clips (calibrated on them: a unit test of the mechanics), saved as int8 constants named after their
    Linears, no float copy of a target weight left in the archive."""
    from whisperquant.evaluate.scoring import corpus_errors
    from whisperquant.quantize import get_backend
    from whisperquant.quantize.modules import linear_names

    _, utts, feats = clips
    backend = get_backend("pt2e")
    params = backend.resolve("test", {})
    assert backend.needs_calibration(params)
    backend.build(tiny_en, params, [feats], tmp_path)
    hyps = _decode(backend, params, tiny_en, tmp_path, clips, 64)
    fp32 = corpus_errors((u.reference, h) for u, h in zip(utts, reference[64], strict=True))
    q = corpus_errors((u.reference, h) for u, h in zip(utts, hyps, strict=True))
    assert q.errors <= fp32.errors + 1, (hyps, reference[64])
    names, _ = linear_names(tiny_en, params["targets"])
    sizes = backend.sizes(tmp_path, names)
    # int8 weights + fp32 per-channel scales, int64 zero points and fp32 biases: about 0.26 of fp32
    assert 0.24 < sizes["quantized_module_bytes"] / 66_177_024 < 0.32, sizes
    # everything else is tiny.en's float parameters once (the tied embedding once)
    assert abs(sizes["float_param_bytes"] - (4 * 37_760_256 - 66_177_024)) < 100_000, sizes
    tensors = backend.tensor_bytes(tmp_path)
    assert not [k for k in tensors if backend.module_of(k).removesuffix(".weight") in names and
                k.endswith(".weight")], "a float copy of a target weight was saved"


def test_pt2e_exported_decoder_step_equals_the_eager_one(tiny_en):
    """The exported decoder step against the module it was exported from, for every batch, cache length and
    token count decoding meets: export once aliased the key and value caches (one example tensor passed for
    both), and the program then read the keys from the values for every step after the first."""
    import torch
    from whisperquant.models.onnx_export import graphs
    from whisperquant.quantize.backends.pt2e import _example_inputs, _export
    from whisperquant.quantize.modules import load_fp32

    model = load_fp32(tiny_en)
    encoder, decoder = graphs(model)
    example = _example_inputs(model.config, encoder)
    exported = _export(decoder, example[1]).module()
    cfg = model.config
    heads, dh = cfg.decoder_attention_heads, cfg.d_model // cfg.decoder_attention_heads
    torch.manual_seed(0)
    for batch, past, tokens in [(1, 0, 1), (1, 0, 4), (1, 1, 1), (3, 5, 1), (2, 3, 2), (1, 7, 3)]:
        k, v = (torch.randn(cfg.decoder_layers, batch, heads, past, dh) for _ in range(2))
        cross = [c[:, :1].expand(-1, batch, -1, -1, -1) for c in example[1][3:]]
        ids = torch.randint(0, 1000, (batch, tokens))
        with torch.no_grad():
            for a, b in zip(decoder(ids, k, v, *cross), exported(ids, k, v, *cross), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_onnx_export_names_every_linear_after_its_module(tiny_en, exported):
    """The module's export (the workflow's ``export_graphs``): every Linear's MatMul named after its module."""
    from whisperquant.models.onnx_export import GRAPH_FILES
    from whisperquant.quantize.backends._graphs import onnx_linear_nodes
    from whisperquant.quantize.base import DEFAULT_TARGETS
    from whisperquant.quantize.modules import linear_names

    enc, dec = (exported / f for f in GRAPH_FILES)
    targets, others = linear_names(tiny_en, DEFAULT_TARGETS)
    found = set()
    for path in (enc, dec):
        nodes, rest = onnx_linear_nodes(path, DEFAULT_TARGETS)
        found |= {n[1:-len("/MatMul")].replace("/", ".") for n in nodes}
        assert all(not r.startswith("/model/") for r in rest)  # attention products, the projection
    assert found == set(targets)
    assert others == ["proj_out"]
    only_decoder, _ = onnx_linear_nodes(dec, r"^model\.decoder\.layers\.0\.fc1$")
    assert only_decoder == ["/model/decoder/layers/0/fc1/MatMul"]


def test_a_build_without_the_workflows_export_exports_the_same_graphs(tiny_en, exported, tmp_path):
    """Outside the workflow (no ``graphs``) a backend exports for itself: byte for byte the graphs the
    export stage writes, so a cell built either way is the same artifact."""
    import hashlib

    from whisperquant.models.onnx_export import GRAPH_FILES

    _build("onnxruntime", FLOAT["onnxruntime"], tiny_en, tmp_path)
    for name in GRAPH_FILES:
        assert hashlib.sha256((tmp_path / name).read_bytes()).digest() == \
            hashlib.sha256((exported / name).read_bytes()).digest(), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(GRAPH_FILES)  # its own export went with it


def test_engine_parameters_and_devices_are_checked_at_config_time():
    from whisperquant.quantize import SchemeError, get_backend, libraries

    assert {"ctranslate2", "onnxruntime", "openvino"} <= set(libraries())
    assert "_engine" not in libraries() and "_graphs" not in libraries()
    ct2 = get_backend("ctranslate2")
    with pytest.raises(SchemeError, match=r"^schemes\.x\.compute_type: 'int4' is not offered"):
        ct2.resolve("x", {"compute_type": "int4"})
    with pytest.raises(SchemeError, match=r"^schemes\.x\.targets: CTranslate2 quantises every weight"):
        ct2.resolve("x", {"compute_type": "int8", "targets": "fc1"})
    fp16 = ct2.resolve("x", {"compute_type": "float16"})
    assert "no float16 kernels on cpu" in ct2.unsupported_reason(fp16, "cpu")
    assert ct2.unsupported_reason(fp16, "cuda") is None
    assert "no int16 kernels on cuda" in ct2.unsupported_reason(ct2.resolve("x", {"compute_type": "int16"}), "cuda")
    assert get_backend("onnxruntime").unsupported_reason(get_backend("onnxruntime").resolve("x", {}), "cuda")
    ov = get_backend("openvino")
    with pytest.raises(SchemeError, match=r"group_size: 100 does not divide the model's width 384"):
        ov.check_model("x", ov.resolve("x", {"compression": "int4_sym", "group_size": 100}), {"d_model": 384})
    with pytest.raises(SchemeError, match=r"^schemes\.x\.data: NNCF.s data-aware algorithms \(gptq\) work on"):
        ov.resolve("x", {"compression": "int8_asym", "data": "gptq"})
    with pytest.raises(SchemeError, match=r"^schemes\.x\.ratio: 1\.5 must be in"):
        ov.resolve("x", {"compression": "int3_sym", "ratio": 1.5})
    assert not ov.needs_calibration(ov.resolve("x", {"compression": "int3_sym", "ratio": 0.8}))
    assert ov.needs_calibration(ov.resolve("x", {"compression": "int3_sym", "ratio": 0.8,
                                                 "sensitivity": "hessian_input_activation"}))


def test_onnxruntime_without_prepacking_holds_less_and_decodes_the_same(tiny_en, clips, built):
    """``prepack: false`` loads the same int8 artifact without ONNX Runtime's packed weight copies.

    The CPU provider packs every constant GEMM weight, the tied output projection included (tiny.en's
    token embedding, 51,864 x 384 float32 = 79.7 MB, also kept for the lookup); with
    ``session.disable_prepacking`` that copy is not made.  Measured here as the job measures
    ``model_mem_mb`` (gc + malloc_trim before and after loading): 177 MB with prepacking, 110 MB without.
    """
    from whisperquant.evaluate.memory import settled_rss_mb
    from whisperquant.evaluate.transcribe import generate_kwargs_for

    feats = clips[2]
    artifact, backend, params, _ = built("onnxruntime", INT8["onnxruntime"])
    grown, hyps = {}, {}
    for prepack in (False, True):
        rss0 = settled_rss_mb()
        model = backend.load(tiny_en, {**params, "prepack": prepack}, artifact, "cpu")
        grown[prepack] = settled_rss_mb() - rss0
        hyps[prepack] = [list(map(int, t)) for t in model.generate(feats, **generate_kwargs_for(model, "en", 64))]
        del model
    print(f"ONNX Runtime int8 on tiny.en, MB held after loading: {grown}")
    assert hyps[False] == hyps[True]
    # The saving depends on the CPU: on an AVX2 EPYC and an AVX-512 VNNI Xeon most of the 79.7 MB projection
    # copy was not made (110 vs 177 MB); on an AMX Xeon (2026-12-02) both held 174 MB. Never more without.
    assert grown[False] <= grown[True] + 5, grown
    assert "pre-packing off" in backend.method({**params, "prepack": False})
