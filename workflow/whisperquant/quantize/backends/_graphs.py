"""Whisper as two exportable graphs (encoder, one decoder step) and the greedy loop that drives them.

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
graph as in PyTorch (:func:`onnx_linear_nodes`).  ONNX Runtime runs the
exported files; OpenVINO converts the same files, so both runtimes execute one
graph.

:func:`greedy_generate` is the decoding rule every engine shares, written to
match transformers' Whisper ``generate`` for greedy short-form transcription:
the same prompt (start of transcript, language and task for multilingual
checkpoints, no timestamps), ``suppress_tokens`` masked at every step,
``begin_suppress_tokens`` at the first, ``max_new_tokens`` generated tokens at
most, and a sequence ends at end-of-text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine import EngineModel, calibration_settings

if TYPE_CHECKING:
    import numpy as np
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


def empty_caches(config, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The self-attention key and value caches before any token: [layers, batch, heads, 0, head_dim] each."""
    import numpy as np

    heads = config.decoder_attention_heads
    shape = (config.decoder_layers, batch, heads, 0, config.d_model // heads)
    return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)


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


def graph_engine_model(model_dir: Path, encode: Callable, step: Callable, keep: object) -> EngineModel:
    """An :class:`~whisperquant.quantize.engine.EngineModel` decoding with :func:`greedy_generate` over a
    runtime's two graphs
    (``keep``: the runtime's objects, alive as long as the model)."""
    model = EngineModel(model_dir, lambda *a: decode(*a), keep=keep)
    suppress, begin = model.suppression()
    eos = int(model.generation_config.eos_token_id)

    def decode(features, prompt, max_new_tokens):
        return greedy_generate(encode, step, features, empty_caches(model.config, features.shape[0]),
                               prompt=prompt, eos=eos, suppress=suppress, begin_suppress=begin,
                               max_new_tokens=max_new_tokens)

    return model


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


_NODE_RX = re.compile(r"^/(model/(?:encoder|decoder)/.+)/MatMul$")


def onnx_linear_nodes(onnx_path: Path, pattern: str) -> tuple[list[str], list[str]]:
    """(MatMul nodes of the Linears whose transformers name matches ``pattern``, every other MatMul/Gemm).

    :func:`export_onnx` names a Linear's node after its module path (``/model/decoder/layers.0/fc1/MatMul``);
    the attention products and the tied output projection (``/proj_out/Gemm``) are in the second list.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    rx = re.compile(pattern)
    chosen, other = [], []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        m = _NODE_RX.match(node.name)
        (chosen if m and rx.search(m.group(1).replace("/", ".")) else other).append(node.name)
    return chosen, other


def greedy_generate(
    encode: Callable[[np.ndarray], tuple],
    step: Callable[[np.ndarray, tuple, tuple], tuple[np.ndarray, tuple]],
    features: np.ndarray,
    empty: tuple,
    *,
    prompt: list[int],
    eos: int,
    suppress: list[int],
    begin_suppress: list[int],
    max_new_tokens: int,
) -> list[list[int]]:
    """Greedy decoding of a batch with the runtime's ``encode``/``step`` functions; the new tokens per input.

    ``encode(features)`` gives the runtime's cross-attention state, ``step(ids, cache, cross)`` the
    last position's logits [B, vocab] and the grown cache; ``empty`` is the cache before any token.
    Ends of text are not returned; a finished sequence is fed end-of-text until the batch is done.
    """
    import numpy as np

    batch = features.shape[0]
    cross = encode(features)
    ids = np.tile(np.asarray(prompt, dtype=np.int64), (batch, 1))
    cache = empty
    out: list[list[int]] = [[] for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    for n in range(max_new_tokens):
        logits, cache = step(ids, cache, cross)
        logits = np.array(logits, dtype=np.float32, copy=True)
        if suppress:
            logits[:, suppress] = -np.inf
        if n == 0 and begin_suppress:
            logits[:, begin_suppress] = -np.inf
        nxt = logits.argmax(axis=-1)
        nxt[done] = eos
        for b in np.flatnonzero(~done):
            if nxt[b] == eos:
                done[b] = True
            else:
                out[b].append(int(nxt[b]))
        if done.all():
            break
        ids = nxt[:, None].astype(np.int64)
    return out


class GraphSamples:
    """A re-iterable sequence of graph-input dicts, each made when it is reached.

    Calibration libraries (ONNX Runtime's reader, NNCF's ``Dataset``) iterate their samples, NNCF
    more than once; made on demand, only one sample is alive here at a time, so what this side holds
    does not grow with utterances x tokens (what a library keeps of each sample is the library's).
    """

    def __init__(self, count: int, make: Callable[[int], dict]) -> None:
        self.count, self.make = count, make

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[dict]:
        return (self.make(i) for i in range(self.count))


def calibration_inputs(
    encode: Callable[[np.ndarray], tuple],
    step: Callable[[np.ndarray, tuple, tuple], tuple[np.ndarray, tuple]],
    batches: list[np.ndarray],
    empty: Callable[[int], tuple],
    **greedy: object,
) -> tuple[GraphSamples, GraphSamples]:
    """(encoder inputs, decoder inputs) for calibrating the two graphs: one sample per utterance.

    A static scheme's activation ranges come from the inputs the graphs see in real decoding: each
    batch is decoded by :func:`greedy_generate` in float32 (same prompt and rules as evaluation,
    ``greedy`` its keyword arguments).  An utterance's decoder sample is then the whole sequence
    the decoder was fed -- the prompt and every generated token it read -- in one teacher-forced
    call with an empty cache: the causal mask gives each position what it saw step by step, so every
    Linear meets the same activation rows as in the evaluation, without the step-by-step caches
    (which grew with the square of the length and were thinned to 16 steps a batch before).  One
    utterance per sample is also the unit NNCF's data-aware algorithms assume (scale estimation and
    AWQ average each sample over its tokens), and it keeps the calibration session's attention
    scores to one utterance's.  Samples are made on iteration: an encoder sample is a slice of the
    features already held; a decoder sample's cross-attention state is recomputed by ``encode``.
    """
    import numpy as np

    features = [b[i : i + 1] for b in batches for i in range(b.shape[0])]
    limit = int(greedy["max_new_tokens"])
    fed: list[list[int]] = []
    for batch in batches:
        # the last generated token is only read when the sequence ended before the limit
        fed += [list(greedy["prompt"]) + tokens[: limit - 1]
                for tokens in greedy_generate(encode, step, batch, empty(batch.shape[0]), **greedy)]

    def decoder_sample(i: int) -> dict:
        ids = np.asarray([fed[i]], dtype=np.int64)
        return dict(zip(DECODER_INPUTS, (ids, *empty(1), *encode(features[i])), strict=True))

    return (GraphSamples(len(features), lambda i: {"input_features": features[i]}),
            GraphSamples(len(fed), decoder_sample))


def fp32_calibration_samples(model_dir: Path, encode: Callable, step: Callable, calibration,
                             what: str) -> tuple[GraphSamples, GraphSamples]:
    """:func:`calibration_inputs` of ``calibration`` decoded by a runtime's fp32 ``encode``/``step``, with
    the evaluation's rule (:func:`~whisperquant.quantize.engine.calibration_settings`); ``what`` names the
    scheme kind in the error raised when no calibration set was given."""
    from functools import partial

    if not calibration:
        raise ValueError(f"{what} needs a calibration set")
    settings = calibration_settings(model_dir, calibration)
    config = settings.pop("config")
    return calibration_inputs(encode, step, [f.numpy() for f in calibration], partial(empty_caches, config),
                              **settings)
