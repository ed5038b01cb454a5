"""Whisper's fp32 checkpoint as two exportable graphs (encoder, one decoder step), and their ONNX export.

Runtimes that execute a graph file (ONNX Runtime, OpenVINO) need Whisper's
forward pass without transformers' Python-side machinery (cache classes,
generation utilities).  :class:`EncoderGraph` maps log-mel features to the
encoder output's cross-attention keys and values of every decoder layer
(computed once per input, as transformers does); :class:`DecoderStepGraph`
takes new tokens, the self-attention cache so far and those cross keys/values,
and returns the next-token logits and the grown cache.  Both reuse the fp32
model's own modules (same weights, same GELU, same layer norms), and both hold
the model under the attribute ``model``, so exported node names carry
transformers' module names (``/model/decoder/layers.0/self_attn/q_proj/MatMul``)
and a scheme's ``targets`` regular expression selects the same Linears in a
graph as in PyTorch.

The export is the workflow's own stage (rule ``export_graphs``, :func:`export_checkpoint`): made once per
model and read by every ONNX Runtime and OpenVINO scheme of it, so a grid of such schemes exports once,
and an edit to the decoding or calibration code, which this module does not import, re-exports nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Graph inputs and outputs, in order.
ENCODER_INPUTS = ("input_features",)
ENCODER_OUTPUTS = ("cross_k", "cross_v")
DECODER_INPUTS = ("input_ids", "self_k", "self_v", "cross_k", "cross_v")
DECODER_OUTPUTS = ("logits", "new_self_k", "new_self_v")


def _graph_modules():
    import torch
    import torch.nn.functional as F

    def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, heads, d // heads).transpose(1, 2)

    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        b, h, t, dh = x.shape
        return x.transpose(1, 2).reshape(b, t, h * dh)

    class EncoderGraph(torch.nn.Module):
        """features [B, mels, frames] -> cross keys and values [layers, B, heads, frames/2, head_dim]."""

        def __init__(self, hf_model) -> None:
            super().__init__()
            self.model = hf_model.model
            self.heads = hf_model.config.encoder_attention_heads
            self.dec_heads = hf_model.config.decoder_attention_heads

        def forward(self, input_features: torch.Tensor):
            enc = self.model.encoder
            x = F.gelu(enc.conv1(input_features))
            x = F.gelu(enc.conv2(x)).permute(0, 2, 1)
            x = x + enc.embed_positions.weight[: x.shape[1]]
            for layer in enc.layers:
                h = layer.self_attn_layer_norm(x)
                a = F.scaled_dot_product_attention(split_heads(layer.self_attn.q_proj(h), self.heads),
                                                   split_heads(layer.self_attn.k_proj(h), self.heads),
                                                   split_heads(layer.self_attn.v_proj(h), self.heads))
                x = x + layer.self_attn.out_proj(merge_heads(a))
                x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
            x = enc.layer_norm(x)
            layers = self.model.decoder.layers
            ks = [split_heads(layer.encoder_attn.k_proj(x), self.dec_heads) for layer in layers]
            vs = [split_heads(layer.encoder_attn.v_proj(x), self.dec_heads) for layer in layers]
            return torch.stack(ks), torch.stack(vs)

    class DecoderStepGraph(torch.nn.Module):
        """(new tokens [B, T], cache [layers, B, heads, P, head_dim] x2, cross k/v) -> (logits [B, vocab]
        of the last new token, the cache grown to P + T)."""

        def __init__(self, hf_model) -> None:
            super().__init__()
            self.model = hf_model.model
            self.heads = hf_model.config.decoder_attention_heads

        def forward(self, input_ids, self_k, self_v, cross_k, cross_v):
            dec = self.model.decoder
            past = self_k.shape[3]
            pos = torch.arange(input_ids.shape[1], device=input_ids.device) + past
            x = dec.embed_tokens(input_ids) + dec.embed_positions.weight[pos]
            # new token i (at position past + i) sees every position up to its own
            mask = torch.arange(past + input_ids.shape[1], device=input_ids.device)[None, :] <= pos[:, None]
            new_k, new_v = [], []
            for i, layer in enumerate(dec.layers):
                h = layer.self_attn_layer_norm(x)
                k = torch.cat([self_k[i], split_heads(layer.self_attn.k_proj(h), self.heads)], dim=2)
                v = torch.cat([self_v[i], split_heads(layer.self_attn.v_proj(h), self.heads)], dim=2)
                new_k.append(k)
                new_v.append(v)
                a = F.scaled_dot_product_attention(split_heads(layer.self_attn.q_proj(h), self.heads), k, v,
                                                   attn_mask=mask)
                x = x + layer.self_attn.out_proj(merge_heads(a))
                h = layer.encoder_attn_layer_norm(x)
                a = F.scaled_dot_product_attention(split_heads(layer.encoder_attn.q_proj(h), self.heads),
                                                   cross_k[i], cross_v[i])
                x = x + layer.encoder_attn.out_proj(merge_heads(a))
                x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
            last = dec.layer_norm(x[:, -1])
            # 2-D input: exported as one Gemm(transB) on the token embedding itself, so the tied
            # output projection is not stored a second time as a transposed copy
            logits = F.linear(last, dec.embed_tokens.weight)
            return logits, torch.stack(new_k), torch.stack(new_v)

    return EncoderGraph, DecoderStepGraph


def graphs(hf_model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(encoder graph, decoder-step graph) over ``hf_model``'s own modules (float32, eval)."""
    encoder_cls, decoder_cls = _graph_modules()
    return encoder_cls(hf_model).eval(), decoder_cls(hf_model).eval()


def example_inputs(config, frames: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Example features and decoder-step (ids, self_k, self_v) for exporting the two graphs.

    Batch and lengths are above 1 so that an exporter keeps them dynamic, and the key and value caches
    are two tensors: ``torch.export`` makes one object passed twice a single input, and the program
    then reads the keys from the values.
    """
    import torch

    heads = config.decoder_attention_heads
    cache = torch.zeros(config.decoder_layers, 2, heads, 3, config.d_model // heads)
    return (torch.zeros(2, config.num_mel_bins, frames),
            (torch.zeros(2, 2, dtype=torch.long), cache, cache.clone()))


def export_onnx(hf_model, out_dir: Path, frames: int) -> tuple[Path, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` (fp32; batch and lengths dynamic) into ``out_dir``.

    TorchScript-based ``torch.onnx.export`` names a Linear's node after its own attribute only
    (``/fc1/MatMul``); :func:`_label_linears` renames each to its transformers module path so a
    scheme's ``targets`` select nodes by the same names as modules.
    """
    import torch

    encoder, decoder = graphs(hf_model)
    feats, (ids, self_k, self_v) = example_inputs(hf_model.config, frames)
    with torch.no_grad():
        enc_calls, (cross_k, cross_v) = _linear_calls(hf_model, encoder, (feats,))
        dec_calls, _ = _linear_calls(hf_model, decoder, (ids, self_k, self_v, cross_k, cross_v))
    enc_path, dec_path = out_dir / "encoder.onnx", out_dir / "decoder.onnx"
    kv_axes = {1: "batch", 3: "frames"}
    with torch.no_grad():
        torch.onnx.export(encoder, (feats,), str(enc_path), input_names=list(ENCODER_INPUTS),
                          output_names=list(ENCODER_OUTPUTS), opset_version=17, dynamo=False,
                          dynamic_axes={"input_features": {0: "batch"}, "cross_k": kv_axes, "cross_v": kv_axes})
        torch.onnx.export(decoder, (ids, self_k, self_v, cross_k, cross_v), str(dec_path),
                          input_names=list(DECODER_INPUTS), output_names=list(DECODER_OUTPUTS), opset_version=17,
                          dynamo=False, dynamic_axes={
                              "input_ids": {0: "batch", 1: "tokens"}, "self_k": {1: "batch", 3: "past"},
                              "self_v": {1: "batch", 3: "past"}, "cross_k": kv_axes, "cross_v": kv_axes,
                              "logits": {0: "batch"}, "new_self_k": {1: "batch", 3: "total"},
                              "new_self_v": {1: "batch", 3: "total"}})
    _label_linears(enc_path, enc_calls, tied=None)
    _label_linears(dec_path, dec_calls, tied="model.decoder.embed_tokens.weight")
    return enc_path, dec_path


def _linear_calls(hf_model, graph, args) -> tuple[list[tuple[str, tuple[int, int]]], tuple]:
    """The (name, weight shape) of every nn.Linear ``graph`` calls, in call order, and its outputs."""
    import torch

    calls: list[tuple[str, tuple[int, int]]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _a, n=name: calls.append((n, tuple(mod.weight.shape))))
             for name, m in hf_model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        out = graph(*args)
    finally:
        for h in hooks:
            h.remove()
    return calls, out


def _label_linears(path: Path, calls: list[tuple[str, tuple[int, int]]], tied: str | None) -> None:
    """Name each Linear's MatMul after its module; make the tied output projection a Gemm on the embedding.

    The exporter emits nodes in call order, and a Linear's MatMul is the only one whose second
    input is a stored (transposed) weight, so the k-th such node is the k-th Linear called; each
    pairing is checked by shape.  Constant folding stores the tied projection as a transposed
    copy of the token embedding (79.7 MB on tiny.en); ``Gemm(transB=1)`` on the embedding itself
    computes the same product without it.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    if tied is not None:
        *nodes, proj = nodes
        emb = inits[tied]
        if list(inits[proj.input[1]].dims) != list(reversed(emb.dims)):
            raise RuntimeError(f"{path.name}: the last MatMul is not the tied output projection")
        graph.initializer.remove(inits[proj.input[1]])
        gemm = onnx.helper.make_node("Gemm", [proj.input[0], tied], list(proj.output), name="/proj_out/Gemm",
                                     transB=1)
        graph.node.insert(list(graph.node).index(proj), gemm)
        graph.node.remove(proj)
    if len(nodes) != len(calls):
        raise RuntimeError(f"{path.name}: {len(nodes)} weight MatMuls for {len(calls)} Linear calls")
    for node, (name, (out_f, in_f)) in zip(nodes, calls, strict=True):
        weight = inits[node.input[1]]
        if list(weight.dims) != [in_f, out_f]:
            raise RuntimeError(f"{path.name}: node {node.name} has a {list(weight.dims)} weight, "
                               f"{name} is [{in_f}, {out_f}] transposed")
        node.name = "/" + name.replace(".", "/") + "/MatMul"
        weight.name = node.input[1] = f"{name}.weight_t"
    onnx.save(model, str(path))


#: The files of an export, in the folder :func:`export_onnx` writes.
GRAPH_FILES = ("encoder.onnx", "decoder.onnx")


def export_checkpoint(model_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """Export the fp32 checkpoint in ``model_dir`` (the imported model) into ``out_dir``: :func:`export_onnx`
    with inputs of the checkpoint's full 30-s window."""
    from .checkpoint import load_fp32

    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_fp32(model_dir)
    return export_onnx(model, out_dir, frames=2 * model.config.max_source_positions)


def fp32_graphs(model_dir: Path, exported: Path | None, work: Path) -> Path:
    """The fp32 graphs of ``model_dir`` in ``work``, this build's own folder: copies of ``exported`` (rule
    ``export_graphs``' output) when given, else a fresh export (a backend used outside the workflow).

    Never the shared export itself: a library may write beside the file it reads (ONNX Runtime's
    quantizers write ``<graph>-inferred.onnx`` next to their input and delete it), and two builds of one
    model running at once would then meet there.
    """
    import shutil

    work.mkdir(parents=True, exist_ok=True)
    if exported is None:
        export_checkpoint(model_dir, work)
        return work
    missing = [f for f in GRAPH_FILES if not (Path(exported) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{exported}: no {', '.join(missing)} (the model's export_graphs output)")
    for name in GRAPH_FILES:
        shutil.copyfile(Path(exported) / name, work / name)
    return work
