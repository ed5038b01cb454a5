"""CTranslate2, the engine under faster-whisper: its own converter, its own kernels, its own greedy search.

The artifact is what ``ct2-transformers-converter --quantization <compute_type>``
writes from the fp32 checkpoint (``model.bin`` with the weights stored in the
compute type, ``config.json``, ``vocabulary.json``), so its size is what a
faster-whisper user deploys; the embedded models' fp16 CTranslate2 originals
convert to fp32 losslessly and back, so float32 cells hold the released
weights exactly.  CTranslate2 quantises every weight matrix it stores in an
integer type -- every Linear, the convolutions and the token embedding -- and
offers no per-layer choice, so ``targets`` is not a parameter here.

Decoding is CTranslate2's ``Whisper.generate`` with the transformers prompt
(start, language and task for multilingual checkpoints, no timestamps),
``beam_size=1``, ``suppress_tokens=[-1]`` (the checkpoint's suppression list,
the same as the generation config's) and ``suppress_blank`` (blank and end of
text at the first step: the ``begin_suppress_tokens``).  ``max_length`` is not
a count of new tokens: measured with ctranslate2 4.8.5 on tiny.en and base,
with either prompt length, ``generate`` returns at most ``max_length // 2``
tokens, so ``max_new_tokens`` N is passed as ``2 N + 1`` (the parity test
checks the cap token for token against transformers).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..base import DEFAULT_TARGETS
from ..engine import Engine, EngineModel, runtime_threads
from ..errors import HostLimitation, SchemeError

#: compute type -> (devices CTranslate2 runs it on, stored weight bits, matmul dtype label)
COMPUTE_TYPES = {
    "float32": (("cpu", "cuda"), 32.0, "float32"),
    "int8": (("cpu", "cuda"), 8.0, "int8"),
    "int8_float32": (("cpu", "cuda"), 8.0, "int8"),
    "int16": (("cpu",), 16.0, "int16"),
    "float16": (("cuda",), 16.0, "float16"),
    "int8_float16": (("cuda",), 8.0, "int8"),
}

# CTranslate2 variable -> the transformers Linear it holds (the fused q/k/v and k/v matrices are
# counted under their first member: with the default targets every member is a target).
_LAYER_VAR = re.compile(r"^(encoder|decoder)/layer_(\d+)/(self_attention|attention|ffn)/linear_(\d)/")
_LINEARS = {("self_attention", "0"): "self_attn.q_proj", ("self_attention", "1"): "self_attn.out_proj",
            ("attention", "0"): "encoder_attn.q_proj", ("attention", "1"): "encoder_attn.k_proj",
            ("attention", "2"): "encoder_attn.out_proj", ("ffn", "0"): "fc1", ("ffn", "1"): "fc2"}


class CTranslate2(Engine):
    library = "ctranslate2"
    parameters = {"compute_type": (tuple(COMPUTE_TYPES), "int8")}
    devices = ("cpu", "cuda")
    honors_targets = False
    artifact_files = ("model.bin", "config.json")

    def check(self, scheme: str, params: dict) -> None:
        if params["targets"] != DEFAULT_TARGETS:
            raise SchemeError(f"schemes.{scheme}.targets: CTranslate2 quantises every weight matrix it stores "
                              "in an integer type; it has no per-layer choice")

    def unsupported_reason(self, params: dict, device: str) -> str | None:
        ct = params["compute_type"]
        if device not in COMPUTE_TYPES[ct][0]:
            return f"CTranslate2 has no {ct} kernels on {device} (it runs {ct} on {', '.join(COMPUTE_TYPES[ct][0])})"
        return super().unsupported_reason(params, device)

    def bits(self, params: dict) -> float:
        return COMPUTE_TYPES[params["compute_type"]][1]

    def compute_dtype(self, params: dict, device: str) -> str:
        return COMPUTE_TYPES[params["compute_type"]][2]

    def method(self, params: dict) -> str:
        ct = params["compute_type"]
        if ct in ("float32", "float16"):
            return f"none (CTranslate2 {ct})"
        return (f"CTranslate2 {ct}: weights stored {'int16' if ct == 'int16' else 'int8'} per output row "
                "(every Linear, the convolutions and the token embedding), activations quantised per token "
                "at run time")

    def build(self, base_model_dir: Path, params: dict, calibration, out_dir: Path) -> None:
        import ctranslate2

        converter = ctranslate2.converters.TransformersConverter(str(base_model_dir), load_as_float16=False)
        converter.convert(str(out_dir), quantization=params["compute_type"], force=True)

    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> EngineModel:
        import ctranslate2
        import numpy as np

        ct = params["compute_type"]
        supported = ctranslate2.get_supported_compute_types(device)
        if ct not in supported:
            from ...evaluate.host import describe, host_record

            raise HostLimitation(f"this host ({describe(host_record())}) gets no {ct} kernels from this CTranslate2 "
                                 f"build: it offers {sorted(supported)} on {device}")
        whisper = ctranslate2.models.Whisper(str(artifact_dir), device=device, compute_type=ct,
                                             intra_threads=runtime_threads(), inter_threads=1)

        def decode(features, prompt: list[int], max_new_tokens: int) -> list[list[int]]:
            view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
            results = whisper.generate(view, [prompt] * features.shape[0], beam_size=1,
                                       max_length=2 * max_new_tokens + 1, suppress_blank=True, suppress_tokens=[-1])
            return [list(r.sequences_ids[0]) for r in results]

        return EngineModel(base_model_dir, decode, keep=whisper)

    def tensor_bytes(self, artifact_dir: Path) -> dict[str, int]:
        from ...models.ct2 import read_model_bin

        model = read_model_bin(artifact_dir / "model.bin", allow_quantized=True)
        return {name: int(value.nbytes) for name, value in model.variables.items()}

    def module_of(self, tensor: str) -> str:
        m = _LAYER_VAR.match(tensor)
        if m is None:
            return tensor
        stack, layer, block, index = m.groups()
        return f"model.{stack}.layers.{layer}.{_LINEARS[block, index]}.{tensor[m.end():]}"
