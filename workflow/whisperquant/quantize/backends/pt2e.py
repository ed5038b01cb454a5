"""PT2E: PyTorch's current static int8 path -- ``torch.export``, then ``prepare_pt2e`` / ``convert_pt2e``.

``torch.ao.quantization``'s eager static flow (``pytorch.py``) is deprecated;
PyTorch's replacement is quantisation of an exported graph (PT2E), which now
lives in torchao (``torchao.quantization.pt2e``; PyTorch tutorial "PyTorch 2
Export Quantization with X86 Backend through Inductor").  Here:

1. Whisper's two graphs of :mod:`._graphs` (the encoder with every decoder
   layer's cross-attention keys and values, and one decoder step over the
   self-attention cache: the graphs ONNX Runtime and OpenVINO run) are
   exported with ``torch.export.export`` (non-strict; batch, token, cache and
   frame lengths dynamic; the example key and value caches must be two tensors:
   given one object twice, export makes them one input, and the program reads
   the keys from the values).  Export works on both; transformers' own
   exportable wrappers (``Seq2SeqLMExportableModule``) assume an encoder
   taking ``input_ids`` and an ``lm_head`` and do not fit Whisper as they are.
2. ``prepare_pt2e`` with the ``X86InductorQuantizer`` and its default static
   config -- int8 weights symmetric per output channel, uint8 activations per
   tensor with a ``HistogramObserver`` -- set on each target Linear by module
   name (``set_module_name_qconfig``), so the same Linears are quantised as in
   every other scheme and nothing else (attention products, embeddings, the
   tied output projection stay float).  The quantiser leaves a Linear's output
   in float: only its input and weight are int8, the design that keeps
   Whisper's outliers (see ``pytorch.py``'s ``output: float``).
3. Calibration: both prepared graphs decode the calibration set greedily with
   the evaluation's prompt and rules (:func:`~whisperquant.quantize.engine.calibration_settings`),
   every decoder step observed.
4. ``convert_pt2e`` folds each weight into an int8 constant with its scales;
   the float copies no graph node reads are dropped, the int8 tensors are
   named after their module (``<module>__qweight``, ``__qscale``,
   ``__qzero``, dots as ``__``), and the two programs are re-exported and
   saved with ``torch.export.save`` (``encoder.pt2``, ``decoder.pt2``).

Inference loads the two programs and runs them with
:func:`~._graphs.greedy_generate`.  The converted graph is PT2E's reference
representation: ``quantize -> dequantize -> float linear`` per target, so the
numbers are those of int8 inputs and weights with a float-exact accumulate,
but the matmuls run in float32 -- int8 kernels come only from lowering the
graph with Inductor (``torch.compile``, or ``lower_pt2e_quantized_to_x86``,
which on this graph fused no Linear into a oneDNN int8 kernel in torchao
0.18), which this engine does not do.  ``compute_dtype`` therefore says
float32, and its speed is not that of an int8 deployment.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path

from ...models.onnx_export import example_inputs, graphs
from ..engine import Engine, EngineModel, calibration_settings
from ._graphs import empty_caches, graph_engine_model, greedy_generate

GRAPHS = ("encoder.pt2", "decoder.pt2")
_QSUFFIX = re.compile(r"^(?P<module>.+)__(?P<kind>q(?:weight|scale|zero))$")


class PT2E(Engine):
    library = "pt2e"
    parameters = {"reduce_range": (bool, False)}
    artifact_files = GRAPHS

    def needs_calibration(self, params: dict) -> bool:
        return True

    def bits(self, params: dict) -> float:
        return 8.0

    def compute_dtype(self, params: dict, device: str) -> str:
        return "float32"

    def method(self, params: dict) -> str:
        rr = ", reduce_range" if params["reduce_range"] else ""
        return ("static PT2E (torch.export + X86InductorQuantizer): int8 weights per channel, uint8 activations "
                f"per tensor (histogram, calibrated){rr}, float output; reference Q/DQ graph run in float32")

    # ------------------------------------------------------------------ build
    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path) -> None:
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        from ..modules import load_fp32, target_linears

        if not calibration:
            raise ValueError("PT2E static quantisation needs a calibration set")
        out_dir.mkdir(parents=True, exist_ok=True)
        model = load_fp32(base_model_dir)
        names = target_linears(model, params["targets"])
        encoder, decoder = graphs(model)
        examples = _example_inputs(model.config, encoder)
        quantizer = _quantizer(names, params)
        prepared = [prepare_pt2e(_export(g, example).module(), quantizer)
                    for g, example in zip((encoder, decoder), examples, strict=True)]
        settings = calibration_settings(base_model_dir, calibration)
        config = settings.pop("config")
        encode, step = _functions(*prepared)
        for feats in calibration:
            greedy_generate(encode, step, feats.numpy(), empty_caches(config, feats.shape[0]), **settings)
        for gm, name, example in zip(prepared, GRAPHS, examples, strict=True):
            converted = convert_pt2e(gm)
            _name_and_prune(converted)
            program = _export(converted, example)
            program._example_inputs = None  # else the archive keeps the example cross k/v (37 MB on tiny.en)
            torch.export.save(program, str(out_dir / name))

    # ------------------------------------------------------------------ load
    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> EngineModel:
        programs = [_load_program(artifact_dir / name) for name in GRAPHS]
        encode, step = _functions(*(p.module() for p in programs))
        return graph_engine_model(base_model_dir, encode, step, programs)

    def tensor_bytes(self, artifact_dir: Path) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in GRAPHS:
            program = _load_program(artifact_dir / name)
            for key, t in {**program.state_dict, **program.constants}.items():
                out[f"{name}:{key}"] = t.numel() * t.element_size()
        return out

    def module_of(self, tensor: str) -> str:
        key = tensor.split(":", 1)[1]
        m = _QSUFFIX.match(key)
        return f"{m.group('module').replace('__', '.')}.{m.group('kind')}" if m else key


def _quantizer(names: list[str], params: dict):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    config = xiq.get_default_x86_inductor_quantization_config(reduce_range=params["reduce_range"])
    for n in names:
        quantizer.set_module_name_qconfig(n, config)
    return quantizer


def _example_inputs(config, encoder) -> tuple[tuple, tuple]:
    """Example inputs of both graphs (:func:`~whisperquant.models.onnx_export.example_inputs`, the cross
    k/v from ``encoder``)."""
    import torch

    feats, (ids, self_k, self_v) = example_inputs(config, 2 * config.max_source_positions)
    with torch.no_grad():
        cross_k, cross_v = encoder(feats)
    return (feats,), (ids, self_k, self_v, cross_k, cross_v)


def _export(module, args: tuple):
    """``torch.export`` of one graph, every batch and length dimension dynamic."""
    import torch

    auto = torch.export.Dim.AUTO
    if len(args) == 1:  # encoder: features [B, mels, frames]
        shapes = ({0: auto},)
    else:  # decoder step: ids [B, T], caches and cross k/v [layers, B, heads, len, head_dim]
        kv = {1: auto, 3: auto}
        shapes = ({0: auto, 1: auto}, kv, kv, kv, kv)
    return torch.export.export(module, args, dynamic_shapes=shapes, strict=False)


def _name_and_prune(gm) -> None:
    """Name each folded int8 weight (and its scales) after its Linear; drop float weights no node reads."""
    import torch

    aten_linear = torch.ops.aten.linear.default
    for node in list(gm.graph.nodes):
        if node.target is not aten_linear:
            continue
        deq = node.args[1]
        if not (isinstance(deq, torch.fx.Node) and "dequantize_per_channel" in str(deq.target)):
            continue
        stack = list(node.meta.get("nn_module_stack", {}).values())
        if not stack:
            raise RuntimeError(f"PT2E: linear node {node.name} has no module path to name its weight after")
        module = stack[-1][0]
        for attr, suffix in zip(deq.args[:3], ("qweight", "qscale", "qzero"), strict=True):
            if not (isinstance(attr, torch.fx.Node) and attr.op == "get_attr"):
                raise RuntimeError(f"PT2E: {module}'s int8 weight is not a folded constant")
            new = f"{module.replace('.', '__')}__{suffix}"
            gm.register_buffer(new, operator.attrgetter(attr.target)(gm))
            _drop(gm, attr.target)
            attr.target = new
    gm.graph.eliminate_dead_code()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        if name not in used:
            _drop(gm, name)
    gm.recompile()


def _drop(gm, target: str) -> None:
    path, _, leaf = target.rpartition(".")
    owner = gm.get_submodule(path)
    owner._parameters.pop(leaf, None)
    owner._buffers.pop(leaf, None)
    if leaf in owner.__dict__:
        delattr(owner, leaf)


def _load_program(path: Path):
    import torch
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  registers the quantized_decomposed ops

    return torch.export.load(str(path))


def _functions(encoder, decoder):
    """``encode`` / ``step`` over two torch graph modules, in the numpy convention of ``greedy_generate``
    (no autograd: calibration and inference alike)."""
    import torch

    def encode(features):
        with torch.no_grad():
            return encoder(torch.as_tensor(features))

    def step(ids, cache, cross):
        with torch.no_grad():
            logits, k, v = decoder(torch.as_tensor(ids), torch.as_tensor(cache[0]), torch.as_tensor(cache[1]),
                                   *cross)
        return logits.numpy(), (k, v)

    return encode, step
