"""Safetensors round trips for backends whose modules are not plain nn.Linear.

Quantised modules hold packed integer tensors, scales and small integer
metadata.  Everything is stored as tensors in one ``model.safetensors`` (no
pickle), with non-tensor settings in ``quantization.json``.  The tied
``proj_out`` weight is stored once, as transformers does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def save_tensors(tensors: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Write tensors (made contiguous, shared storage broken) as safetensors."""
    clean = {k: v.detach().contiguous().clone() if _shares(v, tensors, k) else v.detach().contiguous()
             for k, v in sorted(tensors.items())}
    save_file(clean, str(out_dir / WEIGHTS), metadata={"format": "pt"})


def _shares(v: torch.Tensor, tensors: dict[str, torch.Tensor], key: str) -> bool:
    ptr = v.data_ptr()
    return any(other is not v and k != key and other.data_ptr() == ptr for k, other in tensors.items())


def load_tensors(artifact_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(artifact_dir / WEIGHTS))


def float_state(model: torch.nn.Module, skip_prefixes: list[str]) -> dict[str, torch.Tensor]:
    """Parameters and buffers of every module not under one of ``skip_prefixes``; proj_out dropped if tied."""
    out = {}
    tied = _is_tied(model)
    for name, t in model.state_dict().items():
        if any(name == p or name.startswith(p + ".") for p in skip_prefixes):
            continue
        if tied and name == "proj_out.weight":
            continue
        if isinstance(t, torch.Tensor):
            out[name] = t
    return out


def _is_tied(model: torch.nn.Module) -> bool:
    proj = getattr(model, "proj_out", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return (isinstance(proj, torch.nn.Linear) and emb is not None
            and proj.weight.data_ptr() == emb.weight.data_ptr())


def load_float_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy float tensors into the matching parameters/buffers (strict on names we saved)."""
    own = model.state_dict()
    for name, t in tensors.items():
        if name not in own:
            raise KeyError(f"artifact tensor {name!r} has no counterpart in the model")
        own[name].copy_(t)
