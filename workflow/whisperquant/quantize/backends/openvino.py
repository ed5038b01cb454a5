"""OpenVINO: the same two exported graphs converted to OpenVINO IR, fp32 or with NNCF weight compression.

Export: the ONNX files of :func:`~whisperquant.models.onnx_export.export_onnx` (rule
``export_graphs``, once per model for every scheme here and ONNX Runtime's), read by
``openvino.convert_model`` (so ONNX Runtime and OpenVINO run one graph) and
saved as IR with ``compress_to_fp16=False`` (OpenVINO's default would store
float weights as float16).  optimum-intel, the Hugging Face route, requires
``transformers<5.6`` (2.2.0) and cannot install beside our transformers 5.24.

``compression`` is ``nncf.compress_weights``: int8 (asymmetric per output
channel, NNCF's default 8-bit mode, or symmetric) or int4 (symmetric or
asymmetric in groups of ``group_size``, every target at 4 bits: ``ratio`` 1)
on the MatMul weights of the target Linears only (the embedding, the
attention products and the tied output projection are in NNCF's ignored
scope, as they stay float in every other library's schemes).  Weights are
decompressed inside the MatMul kernels: the matmuls compute in float32.
``int3_sym`` and ``int2_sym`` are NNCF's 3- and 2-bit symmetric group modes.

``data`` makes the weight compression data-aware (NNCF's algorithms, on the
inputs the target MatMuls see while the fp32 IR decodes the calibration set
greedily, as ``full_int8`` calibrates): ``awq`` (activation-aware scaling,
where NNCF finds its pattern), ``gptq`` (second-order error compensation),
``se`` (scale estimation), or ``awq+se`` / ``gptq+se``.  NNCF's GPTQ handles
only MatMuls whose weight is stored transposed (``transpose_b``), and the
exported graphs store ``W^T`` (``x @ W^T`` as ``MatMul(x, W^T)``): for GPTQ
each target MatMul is first re-expressed as ``MatMul(x, W, transpose_b)``,
the same product.  ``ratio`` < 1 is NNCF's own mixed precision: that share
of the target weights at the primary width, the rest at NNCF's backup
(int8 asymmetric), chosen by ``sensitivity`` (NNCF's metrics; the
activation-based ones use the calibration inputs).

``compression: full_int8`` is ``nncf.quantize`` with the transformer preset
(SmoothQuant, int8 weights and activations) on the same target MatMuls,
calibrated on the inputs both graphs see while the fp32 IR decodes the
calibration set greedily with the evaluation's rule
(:func:`~whisperquant.quantize.engine.calibration_settings`).

Inference: ``INFERENCE_PRECISION_HINT`` f32 -- on a CPU with AVX512-BF16 or AMX
OpenVINO would otherwise run float models in bfloat16, and ``fp32`` means
float32 -- the job's thread count, and ``ENABLE_MMAP`` off, so the weights are
read into memory the process owns and its resident memory counts them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ...models.onnx_export import DECODER_INPUTS, fp32_graphs
from ..engine import Engine, EngineModel, runtime_threads
from ..errors import LibraryLimitation, SchemeError
from ._graphs import GraphSamples, fp32_calibration_samples, graph_engine_model, onnx_linear_nodes

GRAPHS = ("encoder", "decoder")
#: compression -> (NNCF mode name, weight bits)
COMPRESSION = {"none": (None, 32.0), "int8_asym": ("INT8_ASYM", 8.0), "int8_sym": ("INT8_SYM", 8.0),
               "int4_sym": ("INT4_SYM", 4.0), "int4_asym": ("INT4_ASYM", 4.0), "int3_sym": ("INT3_SYM", 3.0),
               "int2_sym": ("INT2_SYM", 2.0), "full_int8": ("quantize", 8.0)}
#: data -> the keyword arguments of ``nncf.compress_weights`` it switches on
DATA_AWARE = {"none": {}, "awq": {"awq": True}, "gptq": {"gptq": True}, "se": {"scale_estimation": True},
              "awq+se": {"awq": True, "scale_estimation": True}, "gptq+se": {"gptq": True, "scale_estimation": True}}
#: NNCF's sensitivity metrics for ``ratio`` < 1 (``nncf.SensitivityMetric``); all but the first read activations
SENSITIVITY = ("weight_quantization_error", "hessian_input_activation", "mean_activation_variance",
               "max_activation_variance", "mean_activation_magnitude")


class OpenVINO(Engine):
    library = "openvino"
    parameters = {"compression": (tuple(COMPRESSION), "int8_asym"), "group_size": (int, 128),
                  "data": (tuple(DATA_AWARE), "none"), "ratio": (float, 1.0),
                  "sensitivity": (SENSITIVITY, "weight_quantization_error")}
    artifact_files = ("encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin")
    uses_graphs = True

    def check(self, scheme: str, params: dict) -> None:
        if params["group_size"] < 1:
            raise SchemeError(f"schemes.{scheme}.group_size: must be a positive number of weights")
        grouped = _grouped(params)
        if params["data"] != "none" and not grouped:
            raise SchemeError(f"schemes.{scheme}.data: NNCF's data-aware algorithms ({params['data']}) work on the "
                              f"group modes int4_sym/int4_asym/int3_sym/int2_sym, not {params['compression']!r}")
        if not 0 < params["ratio"] <= 1 or (params["ratio"] < 1 and not grouped):
            raise SchemeError(f"schemes.{scheme}.ratio: {params['ratio']} must be in (0, 1], and below 1 only "
                              "with a group mode (the rest of the weights go to NNCF's 8-bit backup)")

    def check_model(self, scheme: str, params: dict, dims: dict) -> None:
        d = dims.get("d_model")
        if _grouped(params) and d and d % params["group_size"]:
            raise SchemeError(f"schemes.{scheme}.group_size: {params['group_size']} does not divide the model's "
                              f"width {d}")

    def calibration_kept_mb(self, params: dict, dims: dict, utterances: int) -> tuple[float, str]:
        """NNCF's GPTQ keeps every sample's inputs to the layer it solves, the decoder's cross-attention
        keys and values among them (2 x decoder layers x 1,500 frames x ``d_model`` float32 per
        utterance; the layer count is that of OpenAI's Whisper of this width).  Measured on base:
        3,025 MB peak with 8 utterances, 3,788 MB with 32, so 32 MB each; this estimate says 35."""
        from ...models.architectures import ARCHITECTURES

        if not DATA_AWARE[params.get("data", "none")].get("gptq"):
            return 0.0, ""
        decoder_layers = {d: n for d, n, _heads, _ffn in ARCHITECTURES.values()}.get(dims.get("d_model"))
        if decoder_layers is None:
            return 0.0, ""
        return (utterances * 2 * decoder_layers * 1500 * dims["d_model"] * 4 / 2**20,
                "NNCF's GPTQ keeps every utterance's inputs to the layer it solves")

    def needs_calibration(self, params: dict) -> bool:
        return (params["compression"] == "full_int8" or params.get("data", "none") != "none"
                or (params.get("ratio", 1.0) < 1 and params.get("sensitivity") != SENSITIVITY[0]))

    def compute_dtype(self, params: dict, device: str) -> str:
        return "int8" if params["compression"] == "full_int8" else "float32"

    def bits(self, params: dict) -> float:
        return COMPRESSION[params["compression"]][1]

    def method(self, params: dict) -> str:
        c = params["compression"]
        if c == "none":
            return "none (OpenVINO fp32)"
        if c == "full_int8":
            return ("static: nncf.quantize (transformer preset: SmoothQuant, int8 weights and activations) "
                    "calibrated on the calibration set")
        kind = "per output channel" if c.startswith("int8") else f"in groups of {params['group_size']}"
        extra = ""
        if params.get("data", "none") != "none":
            extra += f", data-aware ({params['data']}) on the calibration set"
        if params.get("ratio", 1.0) < 1:
            extra += (f", NNCF mixed precision: {params['ratio']:.0%} of the weights at the primary width, the rest "
                      f"int8 asymmetric, by {params['sensitivity']}")
        return f"weight-only: NNCF {c} {kind}{extra}, decompressed to float32 in the MatMul"

    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path,
              graphs: Path | None = None) -> None:
        import openvino as ov

        out_dir.mkdir(parents=True, exist_ok=True)
        mode = COMPRESSION[params["compression"]][0]
        with tempfile.TemporaryDirectory(dir=out_dir) as work:
            onnx_dir = fp32_graphs(base_model_dir, graphs, Path(work))
            irs = {name: ov.convert_model(str(onnx_dir / f"{name}.onnx")) for name in GRAPHS}
            samples = None
            if self.needs_calibration(params):
                for name, graph in irs.items():  # fp32 IR, decoded to collect calibration inputs
                    ov.save_model(graph, str(Path(work) / f"{name}.xml"), compress_to_fp16=False)
                samples = _calibration_samples(base_model_dir, Path(work), calibration)
            for name, graph in irs.items():
                targets, _ = onnx_linear_nodes(onnx_dir / f"{name}.onnx", params["targets"])
                if mode == "quantize" and targets:
                    graph = _quantize(graph, samples[name], targets)
                elif mode is not None and targets:
                    graph = _compress(graph, mode, params, targets, samples[name] if samples else None)
                ov.save_model(graph, str(out_dir / f"{name}.xml"), compress_to_fp16=False)

    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> EngineModel:
        encode, step, keep = _session_functions(artifact_dir)
        return graph_engine_model(base_model_dir, encode, step, keep)

    def tensor_bytes(self, artifact_dir: Path) -> dict[str, int]:
        import openvino as ov

        core = ov.Core()
        out: dict[str, int] = {}
        for name in GRAPHS:
            for node, module in _weight_constants(core.read_model(str(artifact_dir / f"{name}.xml"))):
                out[f"{name}:{module}:{node.get_friendly_name()}"] = int(node.get_byte_size())
        return out

    def module_of(self, tensor: str) -> str:
        return tensor.split(":")[1] + "."  # "<module>." so that the module prefix matches


def _session_functions(artifact_dir: Path):
    """(encode, step, what to keep alive) over the two compiled IR graphs (f32, the job's threads)."""
    import openvino as ov

    core = ov.Core()
    core.set_property({"ENABLE_MMAP": False})
    config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": runtime_threads(),
              "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    encoder, decoder = (core.compile_model(str(artifact_dir / f"{name}.xml"), "CPU", config) for name in GRAPHS)
    enc_req, dec_req = encoder.create_infer_request(), decoder.create_infer_request()

    def outputs(request, n: int) -> tuple:  # copies: the request reuses its output buffers
        return tuple(request.get_output_tensor(i).data.copy() for i in range(n))

    def encode(features):
        enc_req.infer({"input_features": features})
        return outputs(enc_req, 2)

    def step(ids, cache, cross):
        dec_req.infer(dict(zip(DECODER_INPUTS, (ids, *cache, *cross), strict=True)))
        logits, k, v = outputs(dec_req, 3)
        return logits, (k, v)

    return encode, step, (core, encoder, decoder, enc_req, dec_req)


def _calibration_samples(base_model_dir: Path, fp32_dir: Path, calibration) -> dict[str, GraphSamples]:
    """Per graph, the inputs it sees while the fp32 IR decodes the calibration batches greedily (one
    utterance per sample, made as NNCF reaches it: :func:`~._graphs.calibration_inputs`)."""
    encode, step, _ = _session_functions(fp32_dir)
    enc, dec = fp32_calibration_samples(base_model_dir, encode, step, calibration, "OpenVINO calibration")
    return {"encoder": enc, "decoder": dec}


def _quantize(graph, samples: GraphSamples, targets: list[str]):
    """``nncf.quantize`` (transformer preset) of the target MatMuls; every other op in the ignored scope."""
    import nncf

    return nncf.quantize(graph, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(samples), ignored_scope=_all_but(graph, targets))


def _all_but(graph, targets: list[str]):
    """NNCF's ignored scope: every weighted op of ``graph`` except the ``targets`` MatMuls."""
    import nncf

    wanted = set(targets)
    ignored = [op.get_friendly_name() for op in graph.get_ops()
               if op.get_type_name() in ("MatMul", "Gather", "Convolution") and op.get_friendly_name() not in wanted]
    return nncf.IgnoredScope(names=ignored, validate=False)


def _grouped(params: dict) -> bool:
    """Whether the scheme's compression quantises in groups (NNCF's 4-, 3- and 2-bit modes)."""
    return params["compression"].startswith(("int4", "int3", "int2"))


def _compress(graph, mode: str, params: dict, targets: list[str], samples: GraphSamples | None = None):
    """NNCF weight compression of the ``targets`` MatMuls; every other weighted op in the ignored scope.

    ``samples``: the graph's calibration inputs, for the data-aware algorithms (``data``) and an
    activation-based ``sensitivity``, run through the graph by NNCF, one utterance per sample.
    Measured on Whisper base (32 utterances): scale estimation peaked at 3.2 GB, GPTQ + scale
    estimation at 3.8 GB (with 8 utterances 3.0 GB: NNCF's GPTQ keeps every sample's inputs to the
    layer it solves); with batch-of-8 samples and a decoder sample per step, GPTQ passed 24 GB.
    """
    import nncf

    data = DATA_AWARE[params.get("data", "none")]
    if data.get("gptq"):
        graph = _weight_transposed(graph, targets)
    kwargs: dict = {}
    if _grouped(params):
        kwargs = {"group_size": params["group_size"], "ratio": params.get("ratio", 1.0), **data}
        if params.get("ratio", 1.0) < 1:
            kwargs["sensitivity_metric"] = getattr(nncf.SensitivityMetric, params["sensitivity"].upper())
        if samples:
            kwargs.update(dataset=nncf.Dataset(samples), subset_size=len(samples))
    # NNCF's logger writes to stdout and does not propagate: its messages are kept here to be read
    said = _KeptMessages()
    logging.getLogger("nncf").addHandler(said)
    try:
        out = nncf.compress_weights(graph, mode=getattr(nncf.CompressWeightsMode, mode),
                                    ignored_scope=_all_but(graph, targets), **kwargs)
    finally:
        logging.getLogger("nncf").removeHandler(said)
    if data.get("awq") and any("No matching patterns" in m and "AWQ" in m for m in said.messages):
        # Measured on Whisper base: without this, `data: awq` wrote an artifact byte-identical to
        # round-to-nearest's, a row that looked data-aware and was not.
        raise LibraryLimitation(
            f"NNCF's AWQ found none of its patterns (a MatMul fed by an activation or a Multiply) among the "
            f"{len(targets)} target MatMuls of this graph (Whisper's Linears are fed by LayerNorm, GELU and "
            "attention), so it would skip them silently; use data: se or gptq")
    return out


class _KeptMessages(logging.Handler):
    """A logging handler that keeps the messages it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _weight_transposed(graph, targets: list[str]):
    """Each target ``MatMul(x, W^T)`` re-expressed as ``MatMul(x, W, transpose_b=True)``: the same product,
    in the only form NNCF's GPTQ handles (it raises "Transpose is not supported" on the other).
    The new MatMul keeps the old one's name, so ignored scopes and module names still match."""
    import numpy as np
    from openvino import opset13 as ops

    wanted = set(targets)
    for op in list(graph.get_ops()):
        if op.get_type_name() != "MatMul" or op.get_friendly_name() not in wanted:
            continue
        attrs = op.get_attributes()
        weight = op.input_value(1).get_node()
        if attrs.get("transpose_b") or weight.get_type_name() != "Constant":
            continue
        stored = ops.constant(np.ascontiguousarray(weight.get_data().T))
        new = ops.matmul(op.input_value(0), stored, transpose_a=bool(attrs.get("transpose_a")), transpose_b=True)
        name = op.get_friendly_name()
        op.output(0).replace(new.output(0))
        new.set_friendly_name(name)
    graph.validate_nodes_and_infer_types()
    return graph


def _weight_constants(graph):
    """(Constant node, the module it belongs to) for every stored weight of an OpenVINO model.

    A constant belongs to the Linear whose MatMul it feeds through the decompression chain
    (Convert, Subtract, Multiply, Reshape: all-constant subgraphs) or as the bias its output is
    added to; its module path is the MatMul's name (``/model/decoder/layers/0/fc1/MatMul``) in
    transformers' spelling.  Other constants (embeddings, norms, shapes) keep their node's name.
    """
    def const_sources(node, seen) -> list | None:
        if node.get_type_name() == "Constant":
            return [node]
        if node.get_type_name() == "Parameter" or node.get_input_size() == 0:
            return None
        found = []
        for i in range(node.get_input_size()):
            src = node.input_value(i).get_node()
            if src.get_name() in seen:
                continue
            seen.add(src.get_name())
            sub = const_sources(src, seen)
            if sub is None:
                return None
            found += sub
        return found

    owner: dict[str, str] = {}  # by unique node name: Python wrappers are made anew
    for op in graph.get_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "MatMul" and name.startswith("/model/") and name.endswith("/MatMul"):
            module = name[1:-len("/MatMul")].replace("/", ".")
            for c in const_sources(op.input_value(1).get_node(), set()) or []:
                owner[c.get_name()] = module
            for use in op.output(0).get_target_inputs():  # the bias: an Add of a constant
                add = use.get_node()
                if add.get_type_name() == "Add":
                    for i in range(add.get_input_size()):
                        src = add.input_value(i).get_node()
                        if src.get_type_name() == "Constant":
                            owner[src.get_name()] = module
    return [(op, owner.get(op.get_name(), op.get_friendly_name())) for op in graph.get_ops()
            if op.get_type_name() == "Constant"]
