"""PyTorch-side backends: the artifact is a quantised transformers ``nn.Module``, saved and loaded back.

:class:`ModuleBackend` is the contract of a library that quantises the fp32
``WhisperForConditionalGeneration`` in PyTorch (torch.ao, torchao, quanto, HQQ,
bitsandbytes, the float baselines); the functions below work on Whisper's module
tree for them and for the jobs: loading fp32, a weightless skeleton to load an
artifact onto, finding the target Linears.  torch is imported inside each function.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from ..models.checkpoint import load_fp32
from .base import Backend

if TYPE_CHECKING:
    import torch


class ModuleBackend(Backend):
    """A library whose artifact is the quantised ``nn.Module``: quantise, then save."""

    def quantize(self, base_model_dir: Path, params: dict,
                 calibration: list[torch.Tensor] | None = None) -> torch.nn.Module:
        """Load the fp32 model from ``base_model_dir`` and quantise it for ``params``.

        Backends that quantise while loading (bitsandbytes) override this; the others
        implement :meth:`quantize_model`.
        """
        return self.quantize_model(load_fp32(base_model_dir), params, calibration)

    def quantize_model(self, model: torch.nn.Module, params: dict,
                       calibration: list[torch.Tensor] | None = None) -> torch.nn.Module:
        raise NotImplementedError(f"{type(self).__name__} implements neither quantize nor quantize_model")

    def build(self, base_model_dir: Path, params: dict, calibration: list[torch.Tensor] | None,
              out_dir: Path) -> None:
        self.save(self.quantize(base_model_dir, params, calibration), params, out_dir)

    def sizes(self, artifact_dir: Path, quantized_modules: list[str]) -> dict[str, int]:
        """Read from the safetensors headers (:mod:`whisperquant.quantize.sizes`)."""
        from .sizes import artifact_sizes

        return artifact_sizes(artifact_dir, quantized_modules)

    @abstractmethod
    def save(self, model: torch.nn.Module, params: dict, out_dir: Path) -> None:
        """Write the quantised weights (safetensors) and any metadata (JSON) to ``out_dir``."""

    @abstractmethod
    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> torch.nn.Module:
        """Rebuild the quantised model from ``artifact_dir`` (and the fp32 config) for inference."""


def target_linears(model: torch.nn.Module, pattern: str) -> list[str]:
    """Names of the nn.Linear modules whose qualified name matches ``pattern``."""
    import torch

    rx = re.compile(pattern)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and rx.search(n)]


def set_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def architecture(model_dir: Path) -> torch.nn.Module:
    """The model's module tree from config.json on the meta device: names and types, no weights."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    with torch.device("meta"):
        return WhisperForConditionalGeneration(WhisperConfig.from_pretrained(str(model_dir)))


def skeleton(model_dir: Path) -> torch.nn.Module:
    """An inference-ready module tree with no weights yet: filled from an artifact by :func:`fill`.

    Loading a quantised artifact onto this instead of :func:`load_fp32` never
    materialises the fp32 weights, so the memory a loaded model holds is what its
    artifact holds.  Same attention implementation and generation config as
    :func:`load_fp32`.
    """
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig.from_pretrained(str(model_dir), attn_implementation="sdpa")
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig.from_pretrained(str(model_dir))
    return model.eval()


def fill(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Put ``tensors`` (state-dict names) into a :func:`skeleton` by assignment, tie, check nothing is left."""
    import torch

    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for name, t in tensors.items():
        owner, _, attr = name.rpartition(".")
        module = model.get_submodule(owner)
        if name in params:
            setattr(module, attr, torch.nn.Parameter(t, requires_grad=False))
        elif name in buffers:
            module._buffers[attr] = t
        else:
            raise KeyError(f"artifact tensor {name!r} has no counterpart in the model")
    model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise KeyError(f"the artifact does not provide {len(left)} tensor(s) of the model, e.g. {left[0]}")
    return model


def linear_names(model_dir: Path, pattern: str) -> tuple[list[str], list[str]]:
    """(Linears matching ``pattern``, the other Linears), read without loading any weight."""
    import torch

    model = architecture(model_dir)
    targets = target_linears(model, pattern)
    others = sorted(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n not in targets)
    return targets, others


def write_params(out_dir: Path, library: str, params: dict, extra: dict | None = None) -> None:
    (out_dir / "quantization.json").write_text(
        json.dumps({"library": library, "params": params, **(extra or {})}, indent=2, sort_keys=True) + "\n"
    )
