"""The shared base of backends that swap ``nn.Linear`` modules, and their safetensors round trip.

PyTorch (torch.ao), torchao and HQQ all replace each target Linear by a
quantised module (or a Linear whose weight is a quantised tensor) and save
the model the same way: the quantised modules' tensors under
``<module name>.<tensor name>``, every other parameter and buffer as it is,
all in one ``model.safetensors`` (no pickle), with the scheme's settings in
``quantization.json``.  The tied ``proj_out`` weight is stored once, as
transformers does.  A backend of this kind implements three small hooks --
which modules are quantised, their tensors, and how to rebuild one from its
tensors -- and inherits ``save`` and ``load``.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from .modules import ModuleBackend, fill, set_module, skeleton, target_linears, write_params

if TYPE_CHECKING:
    import torch

WEIGHTS = "model.safetensors"


class LinearSwapBackend(ModuleBackend):
    """A backend whose quantised model differs from fp32 only in its target Linears."""

    @abstractmethod
    def quantized_key(self, name: str, module: torch.nn.Module) -> str | None:
        """The target name under which ``module`` (at ``name``) is saved, or None if it is not quantised."""

    @abstractmethod
    def module_tensors(self, model: torch.nn.Module, key: str, module: torch.nn.Module,
                       params: dict) -> dict[str, torch.Tensor]:
        """The tensors that rebuild the quantised module saved as ``key`` (names without the prefix)."""

    @abstractmethod
    def rebuild(self, linear: torch.nn.Module, tensors: dict[str, torch.Tensor], params: dict,
                device: str) -> torch.nn.Module:
        """The quantised module for the float ``linear`` from its saved ``tensors`` (pop what you use)."""

    def save(self, model, params, out_dir: Path) -> None:
        tensors: dict[str, torch.Tensor] = {}
        names = []
        for name, mod in model.named_modules():
            key = self.quantized_key(name, mod)
            if key is None:
                continue
            names.append(key)
            tensors.update({f"{key}.{k}": v for k, v in self.module_tensors(model, key, mod, params).items()})
        tensors.update(float_state(model, names))
        save_tensors(tensors, out_dir)
        write_params(out_dir, self.library, params, {"quantized_modules": sorted(names)})

    def load(self, base_model_dir, params, artifact_dir, device):
        """Rebuild on a weightless skeleton: the fp32 weights are never materialised."""
        model = skeleton(base_model_dir)
        tensors = load_tensors(artifact_dir)
        for name in target_linears(model, params["targets"]):
            prefix = name + "."
            own = {k[len(prefix):]: tensors.pop(k) for k in [k for k in tensors if k.startswith(prefix)]}
            if not own:
                raise KeyError(f"{artifact_dir}: no quantised tensors for target {name}")
            set_module(model, name, self.rebuild(model.get_submodule(name), own, params, device))
            if own:
                raise KeyError(f"{artifact_dir}: tensors of {name} not used by {self.library}: {sorted(own)}")
        fill(model, tensors)
        model = model.eval()
        return model.to(device) if device != "cpu" else model


def save_tensors(tensors: dict[str, torch.Tensor], out_dir: Path) -> None:
    """Write tensors (made contiguous, shared storage broken) as safetensors."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().clone() if _shares(v, tensors, k) else v.detach().contiguous()
             for k, v in sorted(tensors.items())}
    save_file(clean, str(out_dir / WEIGHTS), metadata={"format": "pt"})


def _shares(v: torch.Tensor, tensors: dict[str, torch.Tensor], key: str) -> bool:
    ptr = v.data_ptr()
    return any(other is not v and k != key and other.data_ptr() == ptr for k, other in tensors.items())


def load_checkpoint(artifact_dir: Path, device: str) -> torch.nn.Module:
    """A checkpoint saved with ``save_pretrained`` (fp32, fp16), onto a skeleton in owned memory."""
    model = fill(skeleton(artifact_dir), load_tensors(artifact_dir))
    return model.to(device) if device != "cpu" else model


def load_tensors(artifact_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the artifact, in memory the process owns.

    ``safetensors.torch.load_file`` maps the file, and a mapped page only becomes
    resident when first touched, so the memory a freshly loaded model holds would
    depend on what inference touched; reading the bytes makes it the artifact's size.
    """
    from safetensors.torch import load

    return load(Path(artifact_dir, WEIGHTS).read_bytes())


def float_state(model: torch.nn.Module, skip_prefixes: list[str]) -> dict[str, torch.Tensor]:
    """Parameters and buffers of every module not under one of ``skip_prefixes``; proj_out dropped if tied."""
    import torch

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
    import torch

    proj = getattr(model, "proj_out", None)
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return (isinstance(proj, torch.nn.Linear) and emb is not None
            and proj.weight.data_ptr() == emb.weight.data_ptr())
