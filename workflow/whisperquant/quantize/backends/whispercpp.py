"""whisper.cpp, the on-device Whisper runtime: our own ggml file, ggml's own quantiser, whisper.cpp's decoder.

Runtime: the PyPI wheel ``pywhispercpp`` (pinned; it ships whisper.cpp 1.8.5 and ggml 0.13.1
as shared libraries, CPU only).  The artifact is one file, ``ggml-model.bin``, written by
:mod:`whisperquant.models.ggml` from the fp32 checkpoint: ``f32`` holds the checkpoint's
values exactly (the reference converter rounds through float16 first), ``f16`` rounds them
once.  A quantised ``type`` stores the Linear weights and the token embedding in that ggml
block format, encoded by ``ggml_quantize_chunk`` of the wheel's own ``libggml-base`` (the
code whisper.cpp's ``quantize`` tool runs), the two convolution kernels in float16 and
everything else (biases, norms, positional tables) in float32, as whisper.cpp requires.
Block formats: ``q8_0`` (8-bit, one scale per 32 values: 8.5 bits per weight), ``q5_0``
(5.5), ``q5_1`` (6.0: a minimum too), ``q4_0`` (4.5), and the K-quants ``q4_K`` (4.5) and
``q5_K`` (5.5), whose super-blocks of 256 values need every stored row to be a multiple of
256 wide: not tiny/tiny.en (d_model 384), which is refused with that reason -- at config time
where the model's ``dims`` are known, else when the artifact is built.  whisper.cpp takes no
per-layer choice, so ``targets`` is not a parameter.

Decoding is ``whisper_full`` on the log-mel features the pipeline computed (``whisper_set_mel``:
transformers' feature extractor, so a difference from transformers is the runtime's, not the
front end's), one 30-s window per utterance, greedy at temperature 0 with no fallback,
``no_timestamps`` (whisper.cpp's prompt: start, [language, task,] no timestamps -- checked
equal to transformers' at load), no carried context, ``suppress_blank`` and ``suppress_nst``
(the non-speech tokens: transformers' ``suppress_tokens``), no no-speech skipping, and
``max_tokens`` set so at most ``max_new_tokens`` tokens come back.  Threads: the job's count,
fixed for the whole decode.  whisper.cpp keeps its self-attention cache and intermediate
results in float16 whatever the file's type, so even ``f32`` is not an all-float32 forward
pass; ``flash_attn`` (whisper.cpp's default, on) is a parameter.

A file whisper.cpp cannot load can crash the process (a failed ``GGML_ASSERT`` aborts), so
:meth:`WhisperCpp.load` first checks the file's structure (:func:`~whisperquant.models.ggml.read_model`)
and loads it once in a child process that also decodes a silent window; a refusal or a crash
there becomes a :class:`~whisperquant.quantize.LibraryLimitation` (a row with its reason), not a
dead job.  That check is part of the cell's ``load_s`` (a few seconds).

ggml's worker threads wait for each other by spinning: on a host where other processes hold
the cores, more threads cost more than they give (measured here with base q8_0 on one 16-s
unit while the 2-core host ran at a load of ~20: 1 thread 3.1 CPU s and 18-21 s wall, 2
threads 15-16 CPU s and 60 s wall).  Time whisper.cpp cells on a quiet machine.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import weakref
from functools import cache
from pathlib import Path

from ..base import DEFAULT_TARGETS
from ..engine import Engine, EngineModel, runtime_threads
from ..errors import LibraryLimitation, SchemeError

FILE = "ggml-model.bin"
#: type -> (nominal weight bits, bits per weight with the block scales, the matmul dtype)
WEIGHT_TYPES = {
    "f32": (32.0, 32.0, "float32"),
    "f16": (16.0, 16.0, "float16"),
    "q8_0": (8.0, 8.5, "int8"),
    "q5_1": (5.0, 6.0, "int8"),
    "q5_0": (5.0, 5.5, "int8"),
    "q4_0": (4.0, 4.5, "int8"),
    "q5_K": (5.0, 5.5, "int8"),
    "q4_K": (4.0, 4.5, "int8"),
}
#: what a child process exits with when whisper.cpp returned no context, or refused to decode
_REFUSED, _NO_DECODE = 3, 4
#: The child's work: load the file, then decode one silent window (the encoder and a few decoder steps
#: run every kernel type the file's tensors need: whisper.cpp 1.8.5 loads an f32 file, then aborts in
#: the first convolution).
_PROBE = f"""
import sys
import numpy as np
import _pywhispercpp as pw
params = pw.whisper_context_default_params()
params.use_gpu = False
params.flash_attn = sys.argv[2] == "1"
ctx = pw.whisper_init_from_file_with_params(sys.argv[1], params)
if ctx is None:
    sys.exit({_REFUSED})
n_mels = int(sys.argv[3])
pw.whisper_set_mel(ctx, np.zeros(n_mels * 3000, dtype=np.float32), 3000, n_mels)
full = pw.whisper_full_default_params(pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY)
full.n_threads, full.no_timestamps, full.max_tokens, full.temperature_inc = 1, True, 3, 0.0
full.print_progress = False
sys.exit(0 if pw.whisper_full(ctx, full, np.zeros(0, dtype=np.float32), 0) == 0 else {_NO_DECODE})
"""


def row_refusal(weight_type: str, rows: dict[str, int]) -> str | None:
    """Why ggml cannot store rows of these widths (name -> width) in ``weight_type``, or None."""
    from ...models.ggml import TYPES

    block = TYPES[weight_type][2]
    bad = {name: width for name, width in rows.items() if width % block}
    if not bad:
        return None
    listed = ", ".join(f"{n} {w}" for n, w in sorted(bad.items()))
    kind = "super-blocks" if block == 256 else "blocks"
    return (f"ggml's {weight_type} stores each row in {kind} of {block} values; this model's rows of "
            f"{listed} values are not a multiple of {block}")


@cache
def _ggml_base() -> ctypes.CDLL:
    """The wheel's ``libggml-base`` (the one its extension module links), with the quantiser's signatures."""
    import _pywhispercpp

    libs = Path(_pywhispercpp.__file__).parent / "pywhispercpp.libs"
    found = sorted(libs.glob("libggml-base-*.so*"))
    if len(found) != 1:
        raise LibraryLimitation(f"pywhispercpp: expected one libggml-base in {libs}, found {[p.name for p in found]}")
    lib = ctypes.CDLL(str(found[0]))
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    return lib


def ggml_quantize(array, type_name: str) -> bytes:
    """``array`` ([rows, row] float32) in ggml block format ``type_name``, by ggml's own ``ggml_quantize_chunk``."""
    import numpy as np

    from ...models.ggml import TYPES, row_bytes

    lib = _ggml_base()
    type_id = TYPES[type_name][0]
    matrix = np.ascontiguousarray(array.reshape(-1, array.shape[-1]), dtype=np.float32)
    rows, row = matrix.shape
    size = row_bytes(type_name, row)
    if lib.ggml_row_size(type_id, row) != size:
        raise LibraryLimitation(f"this ggml stores a {type_name} row of {row} in {lib.ggml_row_size(type_id, row)} "
                                f"bytes, the format this pipeline writes says {size}: a different ggml version")
    if lib.ggml_quantize_requires_imatrix(type_id):
        raise LibraryLimitation(f"ggml's {type_name} needs an importance matrix")
    out = np.empty(rows * size, dtype=np.uint8)
    written = lib.ggml_quantize_chunk(type_id, matrix.ctypes.data, out.ctypes.data, 0, rows, row, None)
    if written != out.nbytes:
        raise LibraryLimitation(f"ggml_quantize_chunk wrote {written} bytes of {type_name}, expected {out.nbytes}")
    return out.tobytes()


def probe_load(path: Path, flash_attn: bool, n_mels: int, timeout_s: float = 600.0) -> None:
    """Load ``path`` with whisper.cpp and decode one silent window in a child process; a refusal or a
    crash there raises LibraryLimitation with whisper.cpp's last words, before this process touches it."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), "1" if flash_attn else "0", str(n_mels)],
                          capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode == 0:
        return
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    asserts = [line for line in lines if "GGML_ASSERT" in line or "error" in line.lower()]
    said = " | ".join(dict.fromkeys(asserts or lines[-3:]))
    if proc.returncode < 0:
        how = f"crashed ({signal.Signals(-proc.returncode).name})"
    elif proc.returncode == _REFUSED:
        how = "refused to load it"
    elif proc.returncode == _NO_DECODE:
        how = "loaded it but could not decode a window"
    else:
        how = f"failed (exit status {proc.returncode})"
    raise LibraryLimitation(f"whisper.cpp {how} with {path.name}: {said[-400:]}")


class WhisperCpp(Engine):
    library = "whispercpp"
    parameters = {"type": (tuple(WEIGHT_TYPES), "q8_0"), "flash_attn": (bool, True)}
    honors_targets = False
    artifact_files = (FILE,)

    def check(self, scheme: str, params: dict) -> None:
        if params["targets"] != DEFAULT_TARGETS:
            raise SchemeError(f"schemes.{scheme}.targets: whisper.cpp stores every Linear weight and the token "
                              "embedding in the file's one weight type; it has no per-layer choice")

    def check_model(self, scheme: str, params: dict, dims: dict) -> None:
        rows = {key: dims[key] for key in ("d_model", "ffn_dim") if key in dims}
        reason = row_refusal(params["type"], rows)
        if reason:
            raise SchemeError(f"schemes.{scheme}.type: {reason}")

    def unsupported_reason(self, params: dict, device: str) -> str | None:
        reason = super().unsupported_reason(params, device)  # devices: cpu only
        return reason and f"{reason}: the pinned pywhispercpp wheel is built for the CPU only"

    def bits(self, params: dict) -> float:
        return WEIGHT_TYPES[params["type"]][0]

    def compute_dtype(self, params: dict, device: str) -> str:
        return WEIGHT_TYPES[params["type"]][2]

    def method(self, params: dict) -> str:
        t = params["type"]
        fa = "" if params["flash_attn"] else "; flash attention off"
        if t in ("f32", "f16"):
            return f"none (whisper.cpp {t}{', f16 convolutions' if t == 'f16' else ''}){fa}"
        return (f"whisper.cpp {t}: ggml blocks, {WEIGHT_TYPES[t][1]} bits per weight with scales (every Linear "
                f"and the token embedding), activations quantised per block at run time; f16 convolutions{fa}")

    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path) -> None:
        import json

        from ...models.ggml import GGMLFormatError, write_model

        t = params["type"]
        if t not in ("f32", "f16"):
            config = json.loads((base_model_dir / "config.json").read_text())
            rows = {"d_model": config["d_model"], "ffn_dim": config["encoder_ffn_dim"]}
            reason = row_refusal(t, rows)
            if reason:
                raise LibraryLimitation(reason)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            write_model(base_model_dir, out_dir / FILE, t, encode=ggml_quantize)
        except GGMLFormatError as e:
            raise LibraryLimitation(str(e)) from e

    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> EngineModel:
        import _pywhispercpp as pw

        from ...models.ggml import GGMLFormatError, read_model

        path = artifact_dir / FILE
        try:
            stored = read_model(path)
        except GGMLFormatError as e:
            raise LibraryLimitation(f"not a file whisper.cpp loads: {e}") from e
        if stored.weight_type != params["type"]:
            raise LibraryLimitation(f"{path} holds {stored.weight_type} weights, the scheme asks for {params['type']}")
        probe_load(path, params["flash_attn"], stored.hparams["n_mels"])
        cparams = pw.whisper_context_default_params()
        cparams.use_gpu = False
        cparams.flash_attn = params["flash_attn"]
        ctx = pw.whisper_init_from_file_with_params(str(path), cparams)
        if ctx is None:
            raise LibraryLimitation(f"whisper.cpp returned no context for {path}")
        threads = runtime_threads()
        n_max = stored.hparams["n_text_ctx"] // 2 - 4  # whisper.cpp's per-window token limit

        def decode(features, prompt: list[int], max_new_tokens: int) -> list[list[int]]:
            import numpy as np

            if max_new_tokens > n_max:
                raise LibraryLimitation(f"whisper.cpp decodes at most {n_max} tokens per 30-s window; "
                                        f"max_new_tokens is {max_new_tokens}")
            fparams = _full_params(pw, ctx, prompt, threads, max_new_tokens)
            eot = pw.whisper_token_eot(ctx)
            out = []
            for mel in features:
                mel = np.ascontiguousarray(mel, dtype=np.float32)
                if pw.whisper_set_mel(ctx, mel.reshape(-1), mel.shape[1], mel.shape[0]) != 0:
                    raise LibraryLimitation(f"whisper_set_mel refused a {mel.shape} log-mel window")
                status = pw.whisper_full(ctx, fparams, np.zeros(0, dtype=np.float32), 0)
                if status != 0:
                    raise LibraryLimitation(f"whisper_full failed (status {status})")
                tokens = [t for s in range(pw.whisper_full_n_segments(ctx))
                          for i in range(pw.whisper_full_n_tokens(ctx, s))
                          if (t := pw.whisper_full_get_token_id(ctx, s, i)) < eot]
                out.append(tokens[:max_new_tokens])
            return out

        model = EngineModel(base_model_dir, decode, keep=ctx)
        weakref.finalize(model, pw.whisper_free, ctx)
        return model

    def tensor_bytes(self, artifact_dir: Path) -> dict[str, int]:
        from ...models.ggml import read_model, transformers_name

        return {transformers_name(t.name): t.nbytes for t in read_model(artifact_dir / FILE).tensors.values()}


def _full_params(pw, ctx, prompt: list[int], threads: int, max_new_tokens: int):
    """``whisper_full`` settings for the evaluation's greedy rule, after checking whisper.cpp's prompt is ``prompt``."""
    sot = pw.whisper_token_sot(ctx)
    language, translate = "en", False
    ours = [sot]
    if pw.whisper_is_multilingual(ctx):
        if len(prompt) != 4:
            raise LibraryLimitation(f"a multilingual checkpoint's prompt has a language and a task; got {prompt}")
        language = pw.whisper_lang_str(prompt[1] - sot - 1)
        translate = prompt[2] == pw.whisper_token_translate(ctx)
        ours += [pw.whisper_token_lang(ctx, pw.whisper_lang_id(language)),
                 pw.whisper_token_translate(ctx) if translate else pw.whisper_token_transcribe(ctx)]
    ours.append(pw.whisper_token_not(ctx))
    if ours != list(prompt):
        raise LibraryLimitation(f"whisper.cpp's prompt {ours} is not the evaluation's {list(prompt)}")
    p = pw.whisper_full_default_params(pw.whisper_sampling_strategy.WHISPER_SAMPLING_GREEDY)
    p.n_threads = threads
    p.language = language
    p.translate = translate
    p.detect_language = False
    p.no_context = True
    p.no_timestamps = True
    p.single_segment = True
    p.temperature = 0.0
    p.temperature_inc = 0.0  # no fallback
    p.greedy = {"best_of": 1}
    p.no_speech_thold = 2.0  # a probability never exceeds it: no window is dropped as silence
    p.suppress_blank = True
    p.suppress_nst = True
    # whisper.cpp ends a window once the token of index max_tokens is sampled: max_tokens + 1 tokens
    p.max_tokens = max(1, max_new_tokens - 1)
    p.print_progress = False
    p.print_realtime = False
    p.print_timestamps = False
    p.print_special = False
    return p
