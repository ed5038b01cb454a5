"""whisper.cpp's ggml model file, written from a transformers checkpoint and read back for sizes.

The layout is what whisper.cpp 1.8.5 reads (``whisper_model_load`` in its
``src/whisper.cpp``; the reference converter is its ``models/convert-h5-to-ggml.py``),
all little-endian:

1. magic ``0x67676d6c`` ("ggml"), then 11 int32 hyper-parameters: n_vocab, n_audio_ctx,
   n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head,
   n_text_layer, n_mels, ftype (0 f32, 1 f16, a quantised ``GGML_FTYPE_MOSTLY_*`` plus
   1000 x the quantisation format version 2);
2. the mel filter bank: int32 n_mel, int32 n_fft, n_mel x n_fft float32;
3. the vocabulary: int32 count, then per token (ids 0..count-1) int32 length and its bytes
   (the special tokens after it are implied by n_vocab);
4. tensors until the end of the file: int32 n_dims, int32 name length, int32 ggml type,
   n_dims int32 extents (innermost first, the reverse of numpy's shape), the name, the data.

whisper.cpp decides each tensor's type from ftype alone and checks the file agrees: the
Linear weights and the token embedding in the file's weight type, the two convolution
kernels in float16 (float32 in an f32 file), everything else (biases, layer norms,
positional tables) float32.  The tied output projection is not stored.

Unlike the reference converter, which rounds every tensor through float16 first, the f32
file written here holds the checkpoint's float32 values exactly.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x67676D6C
#: GGML_QNT_VERSION x GGML_QNT_VERSION_FACTOR: what a quantised file's ftype carries on top
QNT_VERSION_OFFSET = 2 * 1000

#: ggml type name -> (ggml_type id, ggml_ftype id, elements per block, bytes per block)
TYPES: dict[str, tuple[int, int, int, int]] = {
    "f32": (0, 0, 1, 4),
    "f16": (1, 1, 1, 2),
    "q4_0": (2, 2, 32, 18),
    "q4_1": (3, 3, 32, 20),
    "q5_0": (6, 8, 32, 22),
    "q5_1": (7, 9, 32, 24),
    "q8_0": (8, 7, 32, 34),
    "q4_K": (12, 12, 256, 144),
    "q5_K": (13, 13, 256, 176),
    "q6_K": (14, 14, 256, 210),
}
_BY_TYPE_ID = {v[0]: k for k, v in TYPES.items()}
_BY_FTYPE = {v[1]: k for k, v in TYPES.items()}

_HPARAMS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
            "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")

# transformers module -> whisper.cpp name, inside a layer (``layers.N`` becomes ``blocks.N``)
_LAYER_NAMES = {
    "self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln",
}
_TOP_NAMES = {
    "encoder.conv1": "encoder.conv1", "encoder.conv2": "encoder.conv2",
    "encoder.embed_positions": "encoder.positional_embedding", "encoder.layer_norm": "encoder.ln_post",
    "decoder.embed_positions": "decoder.positional_embedding", "decoder.embed_tokens": "decoder.token_embedding",
    "decoder.layer_norm": "decoder.ln",
}
_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_CONV_KERNEL = re.compile(r"^encoder\.conv[12]\.weight$")
_POSITIONS = ("encoder.positional_embedding", "decoder.positional_embedding")


class GGMLFormatError(ValueError):
    """A file that is not a whisper.cpp model this module writes and whisper.cpp 1.8.5 loads."""


def ggml_name(name: str) -> str | None:
    """whisper.cpp's name of a transformers state-dict entry; None for the tied ``proj_out.weight``."""
    if name == "proj_out.weight":
        return None
    bare = name.removeprefix("model.")
    m = _LAYER.match(bare)
    if m:
        stack, index, module, param = m.groups()
        if module not in _LAYER_NAMES:
            raise GGMLFormatError(f"{name}: no whisper.cpp counterpart")
        return f"{stack}.blocks.{index}.{_LAYER_NAMES[module]}.{param}"
    if bare.endswith(".weight") and bare.removesuffix(".weight") in _TOP_NAMES:
        mapped = _TOP_NAMES[bare.removesuffix(".weight")]
        return mapped if mapped in _POSITIONS else mapped + ".weight"
    if bare.endswith(".bias") and bare.removesuffix(".bias") in _TOP_NAMES:
        return _TOP_NAMES[bare.removesuffix(".bias")] + ".bias"
    raise GGMLFormatError(f"{name}: no whisper.cpp counterpart")


def transformers_name(ggml: str) -> str:
    """The transformers state-dict name of a whisper.cpp tensor (inverse of :func:`ggml_name`)."""
    m = re.match(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", ggml)
    if m:
        stack, index, module, param = m.groups()
        inverse = {v: k for k, v in _LAYER_NAMES.items()}
        return f"model.{stack}.layers.{index}.{inverse[module]}.{param}"
    inverse = {v: k for k, v in _TOP_NAMES.items()}
    if ggml in _POSITIONS:
        return f"model.{inverse[ggml]}.weight"
    stem, _, param = ggml.rpartition(".")
    return f"model.{inverse[stem]}.{param}"


def stored_type(name: str, n_dims: int, weight_type: str) -> str:
    """The ggml type whisper.cpp expects for tensor ``name`` (its name) in a file of ``weight_type``."""
    if _CONV_KERNEL.match(name):
        return "f32" if weight_type == "f32" else "f16"
    if n_dims == 2 and name not in _POSITIONS and not name.endswith(".bias"):
        return weight_type  # the Linear weights and the token embedding
    return "f32"


def row_bytes(type_name: str, row: int) -> int:
    """Bytes of one row of ``row`` values stored as ``type_name``; GGMLFormatError if blocks do not fit."""
    _, _, block, size = TYPES[type_name]
    if row % block:
        raise GGMLFormatError(f"{type_name} stores rows in blocks of {block} values; a row of {row} does not divide")
    return row // block * size


# --------------------------------------------------------------------------- mel filters


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-300) / min_log_hz) / logstep,
                    hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filters(n_mels: int, sampling_rate: int = 16000, n_fft: int = 400) -> np.ndarray:
    """Whisper's mel filter bank [n_mels, n_fft // 2 + 1], float32, bit for bit OpenAI's ``mel_filters.npz``.

    OpenAI made that file with librosa's ``filters.mel`` (Slaney scale and area normalisation,
    0 Hz to Nyquist).  The order of roundings matters at the last bit: the triangles are
    computed in float64 and stored into a float32 array, then scaled in place by the float64
    normalisation.  transformers' own bank (all float64, rounded once) differs from the file
    in 0.7 % of its entries by one float32 ulp; this one equals it exactly (the tests compare
    both banks, 80 and 128 mels, with the pinned openai-whisper sdist).
    """
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sampling_rate)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(0.0)), _hz_to_mel(np.float64(sampling_rate / 2.0)),
                                    n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = np.subtract.outer(mel_hz, fft_hz)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / widths[i], ramps[i + 2] / widths[i + 1]))
    weights *= (2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels]))[:, np.newaxis]
    return weights


# --------------------------------------------------------------------------- vocabulary


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, inverted: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(others)})
    return table


def vocabulary(tokenizer_json: Path) -> list[bytes]:
    """The BPE vocabulary of a Whisper ``tokenizer.json`` as bytes, in id order (special tokens excluded)."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise GGMLFormatError(f"{tokenizer_json}: the BPE vocabulary's ids are not 0..{len(vocab) - 1}")
    table = _byte_of_char()
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    try:
        return [bytes(table[c] for c in token) for token, _ in by_id]
    except KeyError as e:
        raise GGMLFormatError(f"{tokenizer_json}: token character {e} is not byte-level BPE") from None


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a file: whisper.cpp name, ggml type, numpy shape, where its data starts, its bytes."""

    name: str
    type: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def hyperparameters(config: dict, ftype: int) -> dict[str, int]:
    """The 11 header integers from a transformers ``config.json``."""
    if config["encoder_ffn_dim"] != 4 * config["d_model"] or config["decoder_ffn_dim"] != 4 * config["d_model"]:
        raise GGMLFormatError("whisper.cpp assumes feed-forward layers 4 x d_model wide; this checkpoint's are "
                              f"{config['encoder_ffn_dim']} / {config['decoder_ffn_dim']} "
                              f"for d_model {config['d_model']}")
    return {"n_vocab": config["vocab_size"], "n_audio_ctx": config["max_source_positions"],
            "n_audio_state": config["d_model"], "n_audio_head": config["encoder_attention_heads"],
            "n_audio_layer": config["encoder_layers"], "n_text_ctx": config["max_target_positions"],
            "n_text_state": config["d_model"], "n_text_head": config["decoder_attention_heads"],
            "n_text_layer": config["decoder_layers"], "n_mels": config["num_mel_bins"], "ftype": ftype}


#: (numpy float32 array [rows, row], ggml type name) -> the stored bytes of that tensor
Encoder = Callable[[np.ndarray, str], bytes]


def _plain(array: np.ndarray, type_name: str) -> bytes:
    if type_name == "f32":
        return np.ascontiguousarray(array, dtype="<f4").tobytes()
    if type_name == "f16":
        return np.ascontiguousarray(array, dtype="<f2").tobytes()
    raise GGMLFormatError(f"{type_name}: a quantised type needs ggml's quantiser (pass `encode`)")


def write_model(model_dir: Path, out_file: Path, weight_type: str, encode: Encoder = _plain) -> list[TensorInfo]:
    """Write the whisper.cpp file of the fp32 checkpoint in ``model_dir`` with weights of ``weight_type``.

    ``encode`` turns a float32 array into the bytes of a ggml type (quantised types need ggml's own
    quantiser, :mod:`whisperquant.quantize.backends.whispercpp`).  Written to a temporary name, renamed
    when complete.  Returns what was written.
    """
    from safetensors.numpy import load_file

    if weight_type not in TYPES:
        raise GGMLFormatError(f"unknown ggml type {weight_type!r}; valid: {', '.join(TYPES)}")
    config = json.loads((model_dir / "config.json").read_text())
    ftype = TYPES[weight_type][1] + (0 if weight_type in ("f32", "f16") else QNT_VERSION_OFFSET)
    hparams = hyperparameters(config, ftype)
    state = load_file(str(model_dir / "model.safetensors"))
    filters = mel_filters(hparams["n_mels"])
    tokens = vocabulary(model_dir / "tokenizer.json")
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    written: list[TensorInfo] = []
    with open(tmp, "wb") as f:
        f.write(struct.pack("<I", MAGIC) + struct.pack(f"<{len(_HPARAMS)}i", *(hparams[k] for k in _HPARAMS)))
        f.write(struct.pack("<ii", *filters.shape) + filters.astype("<f4").tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for token in tokens:
            f.write(struct.pack("<i", len(token)) + token)
        for key in sorted(state):
            name = ggml_name(key)
            if name is None:
                continue
            array = state[key].astype(np.float32, copy=False)
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                array = array.reshape(-1, 1)  # whisper.cpp holds them as [n_state, 1]
            kind = stored_type(name, array.ndim, weight_type)
            data = encode(array, kind) if kind not in ("f32", "f16") else _plain(array, kind)
            expected = row_bytes(kind, array.shape[-1]) * (array.size // array.shape[-1])
            if len(data) != expected:
                raise GGMLFormatError(f"{name}: {len(data)} bytes encoded as {kind}, expected {expected}")
            encoded = name.encode()
            f.write(struct.pack(f"<iii{array.ndim}i", array.ndim, len(encoded), TYPES[kind][0], *array.shape[::-1]))
            f.write(encoded)
            written.append(TensorInfo(name, kind, tuple(array.shape), f.tell(), len(data)))
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out_file)
    return written


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class GGMLModel:
    """What a file holds, without its tensor data."""

    hparams: dict[str, int]
    weight_type: str
    n_tokens: int
    tensors: dict[str, TensorInfo]


def _ints(data: bytes, pos: int, n: int, path: Path) -> tuple[tuple[int, ...], int]:
    end = pos + 4 * n
    if end > len(data):
        raise GGMLFormatError(f"{path}: truncated at byte {pos} (wanted {4 * n} more bytes, the file has {len(data)})")
    return struct.unpack_from(f"<{n}i", data, pos), end


def _layer_tensors(stack: str, layers: int) -> Iterator[str]:
    modules = ["attn.query", "attn.key", "attn.value", "attn.out", "attn_ln", "mlp.0", "mlp.2", "mlp_ln"]
    if stack == "decoder":
        modules += ["cross_attn.query", "cross_attn.key", "cross_attn.value", "cross_attn.out", "cross_attn_ln"]
    for i in range(layers):
        for m in modules:
            yield f"{stack}.blocks.{i}.{m}.weight"
            if m not in ("attn.key", "cross_attn.key"):
                yield f"{stack}.blocks.{i}.{m}.bias"


def expected_tensors(hparams: dict[str, int]) -> set[str]:
    """Every tensor name whisper.cpp requires of a file with these hyper-parameters."""
    top = {"encoder.positional_embedding", "encoder.conv1.weight", "encoder.conv1.bias", "encoder.conv2.weight",
           "encoder.conv2.bias", "encoder.ln_post.weight", "encoder.ln_post.bias", "decoder.positional_embedding",
           "decoder.token_embedding.weight", "decoder.ln.weight", "decoder.ln.bias"}
    return (top | set(_layer_tensors("encoder", hparams["n_audio_layer"]))
            | set(_layer_tensors("decoder", hparams["n_text_layer"])))


def read_model(path: str | Path) -> GGMLModel:
    """Parse and check a whisper.cpp file: header, filters, vocabulary, every tensor's name, type and size.

    Checks what whisper.cpp's loader checks (each required tensor once, the type its ftype implies,
    the bytes its extents and type need) and refuses a truncated file or trailing bytes, so a file
    that passes is one the loader reads in full.  GGMLFormatError names the file and the culprit.
    """
    path = Path(path)
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data, 0)[0] if len(data) >= 4 else None
    if magic != MAGIC:
        raise GGMLFormatError(f"{path}: not a ggml model file (magic {magic!r}, expected 0x{MAGIC:08x})")
    pos = 4
    values, pos = _ints(data, pos, len(_HPARAMS), path)
    hparams = dict(zip(_HPARAMS, values, strict=True))
    ftype = hparams["ftype"] % 1000
    if ftype not in _BY_FTYPE:
        raise GGMLFormatError(f"{path}: ftype {hparams['ftype']} is none of {', '.join(TYPES)}")
    weight_type = _BY_FTYPE[ftype]
    (n_mel, n_fft), pos = _ints(data, pos, 2, path)
    pos += 4 * n_mel * n_fft
    (n_tokens,), pos = _ints(data, pos, 1, path)
    for _ in range(n_tokens):
        (length,), pos = _ints(data, pos, 1, path)
        pos += length
    tensors: dict[str, TensorInfo] = {}
    while pos < len(data):
        (n_dims, name_len, type_id), pos = _ints(data, pos, 3, path)
        if not 1 <= n_dims <= 4 or name_len <= 0 or type_id not in _BY_TYPE_ID:
            raise GGMLFormatError(f"{path}: malformed tensor header at byte {pos - 12} "
                                  f"(n_dims {n_dims}, name length {name_len}, type {type_id})")
        extents, pos = _ints(data, pos, n_dims, path)
        name = data[pos : pos + name_len].decode("utf-8", errors="replace")
        pos += name_len
        kind = _BY_TYPE_ID[type_id]
        if name in tensors:
            raise GGMLFormatError(f"{path}: tensor {name!r} stored twice")
        want = stored_type(name, n_dims, weight_type)
        if kind != want:
            raise GGMLFormatError(f"{path}: tensor {name!r} is {kind}; whisper.cpp expects {want} in a "
                                  f"{weight_type} file")
        shape = tuple(extents[::-1])
        nbytes = row_bytes(kind, shape[-1]) * int(np.prod(shape[:-1], dtype=np.int64))
        if pos + nbytes > len(data):
            raise GGMLFormatError(f"{path}: tensor {name!r} truncated ({nbytes} bytes wanted at byte {pos}, "
                                  f"the file has {len(data)})")
        tensors[name] = TensorInfo(name, kind, shape, pos, nbytes)
        pos += nbytes
    missing = sorted(expected_tensors(hparams) - set(tensors))
    unknown = sorted(set(tensors) - expected_tensors(hparams))
    if missing or unknown:
        raise GGMLFormatError(f"{path}: {len(missing)} required tensor(s) missing (e.g. {missing[:1]}), "
                              f"{len(unknown)} unknown (e.g. {unknown[:1]})")
    return GGMLModel(hparams, weight_type, n_tokens, tensors)


def read_tensor(path: str | Path, info: TensorInfo) -> np.ndarray:
    """A float tensor's values (f32 or f16 only: quantised blocks are ggml's to decode)."""
    if info.type not in ("f32", "f16"):
        raise GGMLFormatError(f"{info.name}: {info.type} blocks are not decoded here")
    with open(path, "rb") as f:
        f.seek(info.offset)
        raw = f.read(info.nbytes)
    return np.frombuffer(raw, dtype="<f4" if info.type == "f32" else "<f2").reshape(info.shape)
