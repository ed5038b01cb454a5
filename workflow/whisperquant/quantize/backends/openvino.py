"""OpenVINO: the same two exported graphs converted to OpenVINO IR, fp32 or with NNCF weight compression.

Export: the ONNX files of :func:`~._graphs.export_onnx`, read by
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

import tempfile
from functools import partial
from pathlib import Path

from ..engine import Engine, EngineModel, calibration_settings, runtime_threads
from ..errors import SchemeError
from ._graphs import (
    DECODER_INPUTS,
    calibration_inputs,
    empty_caches,
    export_onnx,
    graph_engine_model,
    onnx_linear_nodes,
)

GRAPHS = ("encoder", "decoder")
#: compression -> (NNCF mode name, weight bits)
COMPRESSION = {"none": (None, 32.0), "int8_asym": ("INT8_ASYM", 8.0), "int8_sym": ("INT8_SYM", 8.0),
               "int4_sym": ("INT4_SYM", 4.0), "int4_asym": ("INT4_ASYM", 4.0), "full_int8": ("quantize", 8.0)}


class OpenVINO(Engine):
    library = "openvino"
    parameters = {"compression": (tuple(COMPRESSION), "int8_asym"), "group_size": (int, 128)}
    artifact_files = ("encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin")

    def check(self, scheme: str, params: dict) -> None:
        if params["group_size"] < 1:
            raise SchemeError(f"schemes.{scheme}.group_size: must be a positive number of weights")

    def check_model(self, scheme: str, params: dict, dims: dict) -> None:
        d = dims.get("d_model")
        if params["compression"].startswith("int4") and d and d % params["group_size"]:
            raise SchemeError(f"schemes.{scheme}.group_size: {params['group_size']} does not divide the model's "
                              f"width {d}")

    def needs_calibration(self, params: dict) -> bool:
        return params["compression"] == "full_int8"

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
        return f"weight-only: NNCF {c} {kind}, decompressed to float32 in the MatMul"

    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path) -> None:
        import openvino as ov

        from ..modules import load_fp32

        out_dir.mkdir(parents=True, exist_ok=True)
        model = load_fp32(base_model_dir)
        mode = COMPRESSION[params["compression"]][0]
        with tempfile.TemporaryDirectory(dir=out_dir) as work:
            export_onnx(model, Path(work), frames=2 * model.config.max_source_positions)
            del model
            graphs = {name: ov.convert_model(str(Path(work) / f"{name}.onnx")) for name in GRAPHS}
            samples = None
            if mode == "quantize":
                for name, graph in graphs.items():  # fp32 IR, decoded to collect calibration inputs
                    ov.save_model(graph, str(Path(work) / f"{name}.xml"), compress_to_fp16=False)
                samples = _calibration_samples(base_model_dir, Path(work), calibration)
            for name, graph in graphs.items():
                targets, _ = onnx_linear_nodes(Path(work) / f"{name}.onnx", params["targets"])
                if mode == "quantize" and targets:
                    graph = _quantize(graph, samples[name], targets)
                elif mode is not None and targets:
                    graph = _compress(graph, mode, params, targets)
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


def _calibration_samples(base_model_dir: Path, fp32_dir: Path, calibration) -> dict[str, list[dict]]:
    """Per graph, the inputs it sees while the fp32 IR decodes the calibration batches greedily."""
    if not calibration:
        raise ValueError("OpenVINO full int8 quantisation needs a calibration set")
    encode, step, _ = _session_functions(fp32_dir)
    settings = calibration_settings(base_model_dir, calibration)
    config = settings.pop("config")
    enc, dec = calibration_inputs(encode, step, [f.numpy() for f in calibration],
                                  partial(empty_caches, config), **settings)
    return {"encoder": enc, "decoder": dec}


def _quantize(graph, samples: list[dict], targets: list[str]):
    """``nncf.quantize`` (transformer preset) of the target MatMuls; every other op in the ignored scope."""
    import nncf

    wanted = set(targets)
    ignored = [op.get_friendly_name() for op in graph.get_ops()
               if op.get_type_name() in ("MatMul", "Gather", "Convolution") and op.get_friendly_name() not in wanted]
    return nncf.quantize(graph, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                         subset_size=len(samples), ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))


def _compress(graph, mode: str, params: dict, targets: list[str]):
    """NNCF weight compression of the ``targets`` MatMuls; every other weighted op in the ignored scope."""
    import nncf

    wanted = set(targets)
    ignored = [op.get_friendly_name() for op in graph.get_ops()
               if op.get_type_name() in ("MatMul", "Gather", "Convolution") and op.get_friendly_name() not in wanted]
    kwargs = {"group_size": params["group_size"], "ratio": 1.0} if mode.startswith("INT4") else {}
    return nncf.compress_weights(graph, mode=getattr(nncf.CompressWeightsMode, mode),
                                 ignored_scope=nncf.IgnoredScope(names=ignored, validate=False), **kwargs)


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
