"""A half-precision baseline: the fp32 checkpoint cast to float16 or bfloat16, computed in that dtype.

Not a quantisation library, but what a GPU deployment starts from; it is its
own scheme so that ``fp32`` always means float32 on every device.  Saved with
``save_pretrained`` (a half-size safetensors), loaded in the same dtype, and
the log-mel features are cast to it.  On CPU, float16 matmuls are slow
emulation on most processors; bfloat16 is native where the CPU has AVX512-BF16
or AMX.
"""

from __future__ import annotations

from pathlib import Path

from ..linear_swap import load_checkpoint
from ..modules import ModuleBackend

_DTYPES = ("float16", "bfloat16")


class FP16(ModuleBackend):
    library = "fp16"
    parameters = {"dtype": (_DTYPES, "float16")}
    devices = ("cpu", "cuda")
    honors_targets = False

    def bits(self, params: dict) -> float:
        return 16.0

    def method(self, params: dict) -> str:
        return f"none ({params['dtype']} baseline, every weight cast)"

    def compute_dtype(self, params: dict, device: str) -> str:
        return params["dtype"]

    def input_dtype(self, params: dict, device: str):
        import torch

        return getattr(torch, params["dtype"])

    def quantize_model(self, model, params, calibration=None):
        return model.to(self.input_dtype(params, "cpu"))

    def save(self, model, params: dict, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model_dir, params, artifact_dir, device):
        return load_checkpoint(artifact_dir, device)
