"""bitsandbytes: LLM.int8 (with outlier threshold), nf4 and fp4 (± double quantisation).

bitsandbytes quantises while loading through transformers'
``BitsAndBytesConfig`` (``device_map="cpu"`` runs its CPU backend).  Modules
outside ``targets`` are passed as ``llm_int8_skip_modules``, so the tied
``proj_out`` stays float by default.  transformers serialises bnb models to
safetensors natively (``save_pretrained``), and reloads them from the
``quantization_config`` recorded in config.json.

``compute_dtype`` on CPU (bitsandbytes 0.50.2): on a CPU with AVX512-BF16,
``Linear4bit`` repacks its weights at the first forward for a fused kernel
that casts inputs and absmax to bfloat16 ("cpu fused op only support bf16
for now", ``backends/cpu/ops.py``) whatever ``compute_dtype`` says; without
AVX512-BF16 it dequantises and multiplies in ``compute_dtype``.  So float32
and bfloat16 gave identical logits on this study's CPU, and the same scheme
would compute differently on another CPU.  We keep the fused kernel only for
``compute_dtype: bfloat16`` (which it honours) and switch it off otherwise,
so float32/float16 are computed as named on every CPU (checked: equal to
dequantise-then-``F.linear`` in that dtype, to the bit).
LLM.int8 on CPU casts its inputs to float16 before quantising them (the
library's own "MatMul8bitLt" warning).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import SchemeError
from ..modules import ModuleBackend, linear_names, write_params

_DTYPES = ("float32", "float16", "bfloat16")


class BitsAndBytes(ModuleBackend):
    library = "bnb"
    parameters = {
        "quant_type": (("int8", "nf4", "fp4"), "nf4"),
        "double_quant": (bool, False),
        "compute_dtype": (_DTYPES, "float32"),
        "threshold": (float, 6.0),
    }
    devices = ("cpu", "cuda")

    def check(self, scheme: str, params: dict) -> None:
        if params["quant_type"] == "int8" and params["double_quant"]:
            raise SchemeError(f"schemes.{scheme}.double_quant: only applies to the 4-bit types nf4 and fp4")
        if params["threshold"] < 0:
            raise SchemeError(f"schemes.{scheme}.threshold: must be >= 0 (0 disables outlier handling)")

    def bits(self, params: dict) -> float:
        return 8.0 if params["quant_type"] == "int8" else 4.0

    def compute_dtype(self, params: dict, device: str) -> str:
        if params["quant_type"] == "int8":
            return "int8 (outlier columns float16)"
        return params["compute_dtype"]

    def method(self, params: dict) -> str:
        if params["quant_type"] == "int8":
            # LLM.int8 (bitsandbytes docs, "LLM.int8()"): int8 weights with one scale per
            # output row; inputs quantised to int8 per token at run time, input columns
            # with a value above the threshold multiplied in float16 (0 = no outlier split).
            return (f"LLM.int8: int8 weights per-channel, dynamic int8 activations per-token, "
                    f"outlier threshold {params['threshold']}")
        dq = ", double quant (8-bit absmax)" if params["double_quant"] else ""
        return (f"{params['quant_type']} weight-only, blocks of 64{dq}, "
                f"compute {params['compute_dtype']}")

    def _config(self, model_dir: Path, params: dict):
        import torch
        from transformers import BitsAndBytesConfig

        _, skip = linear_names(model_dir, params["targets"])
        if params["quant_type"] == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=params["threshold"],
                                      llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=params["quant_type"],
                                  bnb_4bit_use_double_quant=params["double_quant"],
                                  bnb_4bit_compute_dtype=getattr(torch, params["compute_dtype"]),
                                  llm_int8_skip_modules=skip)

    def quantize(self, base_model_dir, params, calibration=None, device: str = "cpu"):
        from transformers import WhisperForConditionalGeneration

        _quiet()
        model = WhisperForConditionalGeneration.from_pretrained(
            str(base_model_dir), quantization_config=self._config(Path(base_model_dir), params),
            device_map=device, use_safetensors=True, trust_remote_code=False).eval()
        return _honor_compute_dtype(model, params)

    def save(self, model, params, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)
        write_params(out_dir, self.library, params)

    def load(self, base_model_dir, params, artifact_dir, device):
        from transformers import WhisperForConditionalGeneration

        _quiet()
        model = WhisperForConditionalGeneration.from_pretrained(
            str(artifact_dir), device_map=device, use_safetensors=True, trust_remote_code=False).eval()
        return _honor_compute_dtype(model, params)


def _honor_compute_dtype(model, params: dict):
    """Use bitsandbytes' fused bf16 CPU kernel only when the scheme asks for bfloat16 compute."""
    if params["quant_type"] != "int8":
        fused = params["compute_dtype"] == "bfloat16"
        for mod in model.modules():
            if hasattr(mod, "support_avx512bf16_for_cpu"):
                mod.support_avx512bf16_for_cpu = mod.support_avx512bf16_for_cpu and fused
    return model


def _quiet() -> None:
    # On CPU every LLM.int8 matmul warns that inputs are cast to float16.
    warnings.filterwarnings("ignore", message="MatMul8bitLt")
