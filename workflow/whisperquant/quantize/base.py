"""The backend contract: what every quantisation library and runtime of the grid offers.

A backend declares, *before any work runs*, which parameters, devices and
parameter values it supports (so the workflow reports an unsupported cell as
a row instead of crashing the grid), builds the artifact of a scheme from the
fp32 checkpoint, sizes it, and loads it for inference.  Two kinds implement it:

- :class:`~whisperquant.quantize.modules.ModuleBackend`: a PyTorch-side library
  that quantises the transformers ``nn.Module`` and saves it (its Linear-swapping
  form: :class:`~whisperquant.quantize.linear_swap.LinearSwapBackend`);
- :class:`~whisperquant.quantize.engine.Engine`: a deployment runtime that
  converts the checkpoint into its own format and decodes with its own kernels.

Adding a library = one new module in ``quantize/backends/`` named after the
library, holding one subclass of either (see :mod:`whisperquant.quantize.registry`).
Nothing here imports torch: the configuration-time methods run while Snakemake
plans the DAG.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import SchemeError

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_TARGETS", "Backend", "cuda_present"]

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
    """One quantisation library or runtime: its configuration-time checks and its artifact."""

    library: ClassVar[str]
    #: Parameter name -> (allowed values or a type, default).  Unknown parameter
    #: names and values outside the allowed set are config errors.
    parameters: ClassVar[dict[str, tuple[Any, Any]]] = {}
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: Whether target Linears may differ in bit-width (``layer_bits``: module -> bits), which a
    #: ``mixed:`` block with widths other than ``float`` needs (:mod:`whisperquant.quantize.mixed`).
    per_layer_bits: ClassVar[bool] = False
    #: Whether the scheme's ``targets`` select what is quantised (a ``mixed:`` block narrows them).
    honors_targets: ClassVar[bool] = True
    #: Whether the artifact is made from the checkpoint's fp32 ONNX graphs
    #: (:mod:`whisperquant.models.onnx_export`): the workflow exports them once per model (rule
    #: ``export_graphs``) and :meth:`build` receives that folder as ``graphs``.
    uses_graphs: ClassVar[bool] = False

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

            if not self.honors_targets:
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

    def calibration_kept_mb(self, params: dict, dims: dict, utterances: int) -> tuple[float, str]:
        """(memory in MB the library keeps for ``utterances`` calibration utterances beyond what the
        model itself needs, what keeps it): 0 where calibration keeps statistics of a bounded size
        (every scheme but those that say otherwise), so config validation can refuse a calibration
        set no quantize job could hold."""
        return 0.0, ""

    # ---- run time ------------------------------------------------------------
    @abstractmethod
    def build(self, base_model_dir: Path, params: dict, calibration: list[torch.Tensor] | None,
              out_dir: Path) -> None:
        """Make the artifact of ``params`` from the fp32 checkpoint in ``base_model_dir``, in ``out_dir``.

        ``calibration`` holds log-mel feature batches (only for schemes that :meth:`needs_calibration`).
        """

    @abstractmethod
    def sizes(self, artifact_dir: Path, quantized_modules: list[str]) -> dict[str, int]:
        """``artifact_bytes``, ``param_bytes``, ``quantized_module_bytes`` and ``float_param_bytes`` of
        the artifact; ``quantized_modules`` are the target Linears' names."""

    @abstractmethod
    def load(self, base_model_dir: Path, params: dict, artifact_dir: Path, device: str) -> Any:
        """The model of ``artifact_dir`` ready for inference: something with transformers' ``generate``."""
