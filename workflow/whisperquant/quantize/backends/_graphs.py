"""The greedy loop that drives a runtime's two graphs, the runtimes' engine model, and their calibration inputs.

The graphs are :mod:`whisperquant.models.onnx_export`'s: the encoder, which also computes every
decoder layer's cross-attention keys and values, and one decoder step with its self-attention cache,
their Linears' nodes named after transformers' modules (:func:`onnx_linear_nodes` selects them by a
scheme's ``targets``).  ONNX Runtime runs the exported files; OpenVINO converts the same files, so both
runtimes execute one graph.

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

from ...models.onnx_export import DECODER_INPUTS
from ..engine import EngineModel, calibration_settings

if TYPE_CHECKING:
    import numpy as np


def empty_caches(config, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The self-attention key and value caches before any token: [layers, batch, heads, 0, head_dim] each."""
    import numpy as np

    heads = config.decoder_attention_heads
    shape = (config.decoder_layers, batch, heads, 0, config.d_model // heads)
    return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)


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


_NODE_RX = re.compile(r"^/(model/(?:encoder|decoder)/.+)/MatMul$")


def onnx_linear_nodes(onnx_path: Path, pattern: str) -> tuple[list[str], list[str]]:
    """(MatMul nodes of the Linears whose transformers name matches ``pattern``, every other MatMul/Gemm).

    :func:`~whisperquant.models.onnx_export.export_onnx` names a Linear's node after its module path
    (``/model/decoder/layers.0/fc1/MatMul``); the attention products and the tied output projection
    (``/proj_out/Gemm``) are in the second list.
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
