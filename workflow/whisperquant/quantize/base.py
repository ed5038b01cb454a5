"""The backend interface: one quantisation library, one module, one registered class.

A backend turns a loaded fp32 ``WhisperForConditionalGeneration`` into a
quantised one for a scheme's parameters, saves it as safetensors (+ JSON),
and loads it back for inference.  It also declares, *before any work runs*,
which devices and parameter values it supports, so the workflow can report an
unsupported cell as a row instead of crashing the grid.

Adding a library = one new module in ``quantize/backends/`` named after the
library, holding one :class:`Backend` subclass (see
:mod:`whisperquant.quantize.registry`).  Nothing here imports torch at module
level: the configuration-time methods run while Snakemake plans the DAG.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .registry import SchemeError

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_TARGETS", "Backend", "SchemeError", "cuda_present"]

#: Linear layers quantised by default: every nn.Linear of encoder and decoder.
#: The output projection ``proj_out`` is tied to the token embedding and stays
#: float unless a scheme lists it explicitly.
DEFAULT_TARGETS = r"^model\.(encoder|decoder)\.layers\.\d+\."


def cuda_present() -> bool:
    """Whether this machine exposes an NVIDIA GPU, decided without importing torch.

    Planning must stay torch-free, so this looks at what the driver publishes
    (``/proc/driver/nvidia/gpus/``, ``/dev/nvidia0``) and honours
    ``CUDA_VISIBLE_DEVICES`` set to nothing or ``-1``.  A job that lands on a
    machine where torch then finds no usable GPU fails loudly.
    """
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


class Backend(ABC):
    """One quantisation library."""

    library: ClassVar[str]
    #: Parameter name -> (allowed values or a type, default).  Unknown parameter
    #: names and values outside the allowed set are config errors.
    parameters: ClassVar[dict[str, tuple[Any, Any]]] = {}
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: Whether target Linears may differ in bit-width (``layer_bits``: module -> bits), which a
    #: ``mixed:`` block with widths other than ``float`` needs (:mod:`whisperquant.quantize.mixed`).
    per_layer_bits: ClassVar[bool] = False
    #: Whether the scheme's ``targets`` select what is quantised (a ``mixed:`` block narrows them).
    honours_targets: ClassVar[bool] = True

    # ---- configuration time (no torch import needed) -------------------------
    def resolve(self, scheme: str, params: dict) -> dict:
        """Fill defaults and validate; raise SchemeError naming ``schemes.<scheme>.<key>``."""
        out: dict[str, Any] = {}
        for key in params:
            if key not in self.parameters and key not in ("library", "targets", "mixed"):
                raise SchemeError(
                    f"schemes.{scheme}.{key}: unknown parameter for library {self.library!r}; "
                    f"valid: {', '.join(sorted([*self.parameters, 'targets', 'mixed']))}"
                )
        for key, (allowed, default) in self.parameters.items():
            value = params.get(key, default)
            if isinstance(allowed, (tuple, list)) and value not in allowed:
                raise SchemeError(
                    f"schemes.{scheme}.{key}: {value!r} is not offered by {self.library}; "
                    f"valid: {', '.join(map(repr, allowed))}"
                )
            if isinstance(allowed, type) and not isinstance(value, allowed):
                raise SchemeError(
                    f"schemes.{scheme}.{key}: expected {allowed.__name__}, got {value!r}"
                )
            out[key] = value
        targets = params.get("targets", DEFAULT_TARGETS)
        try:
            re.compile(targets)
        except re.error as e:
            raise SchemeError(f"schemes.{scheme}.targets: invalid regular expression: {e}") from e
        out["targets"] = targets
        if "mixed" in params:
            from .mixed import check_spec

            if not self.honours_targets:
                raise SchemeError(f"schemes.{scheme}.mixed: {self.library} quantises no chosen set of layers")
            allowed = self.parameters.get("bits", (None,))[0] if self.per_layer_bits else None
            check_spec(scheme, params["mixed"], allowed)
            out["mixed"] = dict(params["mixed"])
        self.check(scheme, out)
        return out

    def check(self, scheme: str, params: dict) -> None:
        """Cross-parameter checks of a backend (override)."""

    def unsupported_reason(self, params: dict, device: str) -> str | None:
        """Why this library cannot run ``params`` on ``device`` at all, or None.

        Whether the device is there is not the backend's question: the config decides
        that (``devices.cuda.available``, :func:`whisperquant.config.cells`).
        """
        if device not in self.devices:
            return f"{self.library} has no {device} implementation in this pipeline"
        return None

    def needs_calibration(self, params: dict) -> bool:
        return False

    def compute_dtype(self, params: dict, device: str) -> str:
        """The dtype the target Linears' matmuls run in on ``device`` (``int8`` when both operands are).

        A label for the report that must say what is computed, never what is stored.
        """
        return "float32"

    def input_dtype(self, params: dict, device: str):
        """The torch dtype the log-mel features must have for this model (None: float32 as extracted)."""
        return None

    def bits(self, params: dict) -> float:
        """Weight bit-width, for reports."""
        return 32.0

    def method(self, params: dict) -> str:
        """Short description: weight-only / dynamic / static, granularity."""
        return ""

    def weight_bytes(self, params: dict, numel: int, bits) -> float:
        """Bytes one target Linear's ``numel`` weights take at ``bits`` (``"float"``: float32), for the
        mixed-precision allocator; libraries with per-group meta-data or padding override."""
        return numel * 4.0 if bits == "float" else numel * float(bits) / 8

    def check_model(self, scheme: str, params: dict, dims: dict) -> None:
        """Model-dependent checks (e.g. group size divides the layer width)."""

    # ---- run time ------------------------------------------------------------
    def quantize(self, base_model_dir: Path, params: dict,
                 calibration: list[torch.Tensor] | None = None) -> torch.nn.Module:
        """Load the fp32 model from ``base_model_dir`` and quantise it for ``params``.

        ``calibration`` holds log-mel feature batches (only for schemes that
        :meth:`needs_calibration`).  Backends that quantise while loading
        (bitsandbytes) override this; the others implement :meth:`quantize_model`.
        """
        return self.quantize_model(load_fp32(base_model_dir), params, calibration)

    def quantize_model(self, model: torch.nn.Module, params: dict,
                       calibration: list[torch.Tensor] | None = None) -> torch.nn.Module:
        raise NotImplementedError

    def build(self, base_model_dir: Path, params: dict, calibration: list[torch.Tensor] | None,
              out_dir: Path) -> None:
        """Make the artifact of ``params`` in ``out_dir``: quantise, then save (engines override)."""
        self.save(self.quantize(base_model_dir, params, calibration), params, out_dir)

    def sizes(self, artifact_dir: Path, quantized_modules: list[str]) -> dict[str, int]:
        """Artifact, parameter, quantised-module and float bytes (:mod:`whisperquant.quantize.sizes`)."""
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


def load_fp32(model_dir: Path, device: str = "cpu") -> torch.nn.Module:
    """The fp32 transformers model, in eval mode, safetensors only, SDPA attention."""
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(
        str(model_dir), dtype="float32", use_safetensors=True, trust_remote_code=False, attn_implementation="sdpa"
    )
    return model.eval().to(device)


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
