"""ONNX Runtime: Whisper exported to two ONNX graphs, fp32 or with ONNX Runtime's dynamic int8 quantisation.

Export: :func:`~whisperquant.models.onnx_export.export_onnx` (``torch.onnx.export`` of the encoder
and of one decoder step with its self-attention cache, made once per model by rule ``export_graphs``
and read by every scheme here and OpenVINO's; Hugging Face's exporter,
optimum-onnx, requires ``transformers<4.58`` and cannot install beside our
transformers 5.24).  ``quantization: dynamic`` is
``onnxruntime.quantization.quantize_dynamic``: int8 weights (per tensor, or
per output channel with ``per_channel``), activations quantised per tensor at
run time (uint8, ``MatMulInteger``), applied to the MatMul of every target
Linear (``targets``, matched on the node names the export gives: the module
paths) and to nothing else -- the attention products and the tied output
projection stay float, as in every other library's schemes.

``quantization: static`` is ``quantize_static`` in QDQ format: int8 weights
and int8 activations per tensor, whose ranges (``calibrate_method``: minmax,
percentile or entropy) come from the inputs both graphs see while fp32 decodes
the calibration set greedily with the evaluation's rule
(:func:`~whisperquant.quantize.engine.calibration_settings`), one utterance per sample
(:func:`~._graphs.calibration_inputs`).

Decoding is :func:`~._graphs.greedy_generate` over the two sessions (one
encoder run per batch, one decoder-step run per token), each session with the
job's thread count, full graph optimisation and no memory-mapped weights.
``prepack`` (default true, ONNX Runtime's own default) lets the CPU provider keep
a pre-packed copy of each constant GEMM weight for its kernels; the tied output
projection is the token embedding, so that copy alone is 106 MB on base (the
embedding is also kept for the lookup).  ``prepack: false`` sets
``session.disable_prepacking``: measured on base, int8 holds 169 MB instead of
271 MB after loading and fp32 292 MB instead of 394 MB, for decoder steps about
15-40 % slower (the kernels pack each call); the artifact is the same.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ...models.onnx_export import DECODER_INPUTS, GRAPH_FILES, fp32_graphs
from ..engine import Engine, EngineModel, runtime_threads
from ._graphs import GraphSamples, fp32_calibration_samples, graph_engine_model, onnx_linear_nodes

GRAPHS = GRAPH_FILES


class ONNXRuntime(Engine):
    library = "onnxruntime"
    parameters = {"quantization": (("none", "dynamic", "static"), "dynamic"), "per_channel": (bool, False),
                  "calibrate_method": (("minmax", "percentile", "entropy"), "minmax"), "prepack": (bool, True)}
    artifact_files = GRAPHS
    uses_graphs = True

    def needs_calibration(self, params: dict) -> bool:
        return params["quantization"] == "static"

    def bits(self, params: dict) -> float:
        return 32.0 if params["quantization"] == "none" else 8.0

    def compute_dtype(self, params: dict, device: str) -> str:
        return "float32" if params["quantization"] == "none" else "int8"

    def method(self, params: dict) -> str:
        weights = f"int8 weights {'per channel' if params['per_channel'] else 'per tensor'}"
        text = {"none": "none (ONNX Runtime fp32)",
                "static": f"static QDQ: {weights}, int8 activations per tensor with {params['calibrate_method']} "
                          "ranges from the calibration set",
                "dynamic": f"dynamic: {weights}, uint8 activations per tensor at run time (quantize_dynamic, "
                           "MatMulInteger)"}[params["quantization"]]
        return text if params["prepack"] else text + "; weight pre-packing off"

    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path,
              graphs: Path | None = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as work:
            fp32_dir = fp32_graphs(base_model_dir, graphs, Path(work))
            if params["quantization"] == "none":
                for name in GRAPHS:
                    os.replace(fp32_dir / name, out_dir / name)  # this build's own copy
                return
            from onnxruntime.quantization import QuantType, quantize_dynamic

            samples = None
            if params["quantization"] == "static":
                samples = dict(zip(GRAPHS, _calibration_samples(base_model_dir, fp32_dir, calibration), strict=True))
            for name in GRAPHS:
                src = fp32_dir / name
                nodes, _ = onnx_linear_nodes(src, params["targets"])
                if not nodes:
                    shutil.copyfile(src, out_dir / name)  # no target Linear in this graph
                    continue
                if samples is None:
                    quantize_dynamic(str(src), str(out_dir / name), weight_type=QuantType.QInt8,
                                     per_channel=params["per_channel"], op_types_to_quantize=["MatMul"],
                                     nodes_to_quantize=nodes, extra_options={"MatMulConstBOnly": True})
                else:
                    _quantize_static(src, out_dir / name, nodes, samples[name], params)
                _restore_tied_projection(out_dir / name)

    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> EngineModel:
        encode, step, sessions = _session_functions(artifact_dir, prepack=params["prepack"])
        return graph_engine_model(base_model_dir, encode, step, sessions)

    def tensor_bytes(self, artifact_dir: Path) -> dict[str, int]:
        import onnx
        from onnx import numpy_helper

        out: dict[str, int] = {}
        for name in GRAPHS:
            for init in onnx.load(str(artifact_dir / name)).graph.initializer:
                out[f"{name}:{init.name}"] = int(numpy_helper.to_array(init).nbytes)
        return out

    def module_of(self, tensor: str) -> str:
        return tensor.split(":", 1)[1]  # initializers carry the parameter (or weight_t) names


def _session_functions(artifact_dir: Path, prepack: bool = True, arena: bool = True):
    """(encode, step, sessions) over the two graphs: the job's threads, full optimisation, CPU.

    ``arena=False`` returns each run's buffers to the system instead of keeping ONNX Runtime's
    memory arena at its high-water mark for the session's life (calibration decodes with it).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = arena
    options.intra_op_num_threads = runtime_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    encoder, decoder = (ort.InferenceSession(str(artifact_dir / name), options, providers=["CPUExecutionProvider"])
                        for name in GRAPHS)

    def encode(features):
        return tuple(encoder.run(None, {"input_features": features}))

    def step(ids, cache, cross):
        logits, k, v = decoder.run(None, dict(zip(DECODER_INPUTS, (ids, *cache, *cross), strict=True)))
        return logits, (k, v)

    return encode, step, (encoder, decoder)


def _restore_tied_projection(path: Path) -> None:
    """Undo what ``quantize_dynamic`` does to the tied output projection (measured with onnxruntime 1.31.1).

    The quantiser first rewrites every ``Gemm`` as a ``MatMul`` and transposes its weight in
    place, so the token embedding the ``Gather`` shares becomes [d_model, vocab] and the
    decoder no longer loads ("Node (/Add_1) ... Incompatible dimensions").  The projection is
    not quantised (it is not a target): transpose the embedding back and make the node the
    ``Gemm(transB=1)`` it was.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    for node in list(graph.node):
        if node.op_type == "MatMul" and node.name.startswith("/proj_out/") and node.input[1] in inits:
            weight = inits[node.input[1]]
            fixed = numpy_helper.from_array(numpy_helper.to_array(weight).T.copy(), weight.name)
            weight.CopyFrom(fixed)
            gemm = onnx.helper.make_node("Gemm", list(node.input), list(node.output), name="/proj_out/Gemm", transB=1)
            graph.node.insert(list(graph.node).index(node), gemm)
            graph.node.remove(node)
    onnx.save(model, str(path))


def _calibration_samples(base_model_dir: Path, fp32_dir: Path, calibration) -> tuple[GraphSamples, GraphSamples]:
    """Encoder and decoder inputs from greedy fp32 decoding of the calibration batches, one utterance each.

    One utterance per sample matters here: ORT's calibration session runs unoptimised, so an encoder
    batch of 8 held every layer's 8 x heads x 1500 x 1500 attention scores at once (measured on
    Whisper base: past 15.9 GB within 20 s of calibrating the encoder).  No op mixes utterances, so
    the per-tensor min/max over single utterances is the batch's.
    """
    # no arena: its high-water mark from decoding batches of 8 would stay resident while ORT calibrates
    # (measured on base: 4.5 GB before the calibration session started, 6.5 GB peak)
    encode, step, _ = _session_functions(fp32_dir, arena=False)
    return fp32_calibration_samples(base_model_dir, encode, step, calibration, "ONNX Runtime static quantisation")


def _quantize_static(src: Path, dst: Path, nodes: list[str], samples: GraphSamples, params: dict) -> None:
    """``quantize_static`` (QDQ, int8 activations and weights) of the target MatMuls on ``samples``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Samples(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(samples)

        def get_next(self):
            return next(self.items, None)

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[params["calibrate_method"]]
    quantize_static(str(src), str(dst), Samples(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=params["per_channel"], op_types_to_quantize=["MatMul"],
                    nodes_to_quantize=nodes, calibrate_method=method,
                    extra_options={"MatMulConstBOnly": True, "ActivationSymmetric": False})
