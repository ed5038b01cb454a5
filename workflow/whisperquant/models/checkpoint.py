"""The imported fp32 checkpoint as transformers' model: what every stage after the import starts from.

Its own module, outside :mod:`whisperquant.quantize`, so that a stage that only needs the checkpoint
(the ONNX export) does not import the quantisation package and with it every library's backend:
its code digest then counts this and :mod:`.onnx_export` only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def load_fp32(model_dir: Path, device: str = "cpu") -> torch.nn.Module:
    """The fp32 transformers model, in eval mode, safetensors only, SDPA attention."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(
        str(model_dir), dtype="float32", use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa"
    )
    return model.eval().to(device)
