"""The unquantised baseline: the fp32 checkpoint, saved as it is."""

from __future__ import annotations

from pathlib import Path

from ..linear_swap import load_checkpoint
from ..modules import ModuleBackend


class FP32(ModuleBackend):
    library = "fp32"
    devices = ("cpu", "cuda")
    honors_targets = False

    def method(self, params: dict) -> str:
        return "none (fp32 baseline)"

    def quantize_model(self, model, params, calibration=None):
        return model

    def save(self, model, params: dict, out_dir: Path) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)

    def load(self, base_model_dir, params, artifact_dir, device):
        """The saved checkpoint onto a weightless skeleton, in owned memory (as every other backend loads)."""
        return load_checkpoint(artifact_dir, device)
