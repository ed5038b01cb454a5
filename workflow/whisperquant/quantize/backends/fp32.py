"""The unquantised baseline: the fp32 checkpoint, saved as it is."""

from __future__ import annotations

from pathlib import Path

from ..base import Backend, fill, skeleton
from ..linear_swap import load_tensors


class FP32(Backend):
    library = "fp32"
    devices = ("cpu", "cuda")

    def method(self, params: dict) -> str:
        return "none (fp32 baseline)"

    def quantize_model(self, model, params, calibration=None):
        return model

    def save(self, model, params: dict, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model_dir, params, artifact_dir, device):
        """The saved checkpoint onto a weightless skeleton, in owned memory (as every other backend loads)."""
        model = fill(skeleton(artifact_dir), load_tensors(artifact_dir))
        return model.to(device) if device != "cpu" else model
