"""optimum-quanto: int8/int4/int2/float8 weights, optionally int8/float8 activations.

What makes a quanto scheme "dynamic" or "static" (optimum-quanto README,
"Quantization workflow" and "Calibration",
https://github.com/huggingface/optimum-quanto#quantization-workflow-for-hugging-face-models):

* ``quantize(model, weights=qint8)`` then ``freeze(model)`` quantises the
  weights only; activations stay float and each matmul dequantises on the fly.
  This is *weight-only* quantisation -- what the study calls quanto's
  "dynamic" int8: nothing about activations is fixed in advance.
* ``quantize(model, weights=..., activations=qint8)`` adds activation
  quantisation, whose scales are *static*: they are recorded by running
  samples ``with Calibration():`` (momentum-averaged ranges) and then frozen.
  Without calibration the activation scales would stay at their initial
  values, so such a scheme requires a calibration set.

Only the encoder and decoder Linears selected by ``targets`` are quantised.
quanto has no speech-seq2seq save/load wrapper; we store the frozen state dict
as safetensors with ``quantization_map()`` in JSON and rebuild with
``requantize()``.  4- and 2-bit kernels fail under ``torch.inference_mode`` on
CPU, so inference uses ``torch.no_grad``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import Backend, load_fp32, register, target_linears, write_params
from .serialization import load_tensors, save_tensors

_WEIGHTS = ("int8", "int4", "int2", "float8")
_ACTIVATIONS = ("none", "int8", "float8")


def _qtype(name: str):
    from optimum import quanto

    return {"int8": quanto.qint8, "int4": quanto.qint4, "int2": quanto.qint2,
            "float8": quanto.qfloat8, "none": None}[name]


@register
class Quanto(Backend):
    library = "quanto"
    parameters = {
        "weights": (_WEIGHTS, "int8"),
        "activations": (_ACTIVATIONS, "none"),
        "calibration_momentum": (float, 0.9),
    }
    devices = ("cpu", "cuda")

    def needs_calibration(self, params: dict) -> bool:
        return params["activations"] != "none"

    def bits(self, params: dict) -> float:
        return {"int8": 8.0, "int4": 4.0, "int2": 2.0, "float8": 8.0}[params["weights"]]

    def method(self, params: dict) -> str:
        if params["activations"] == "none":
            return f"{params['weights']} weight-only (dynamic: activations float)"
        return f"{params['weights']} weights, static {params['activations']} activations (calibrated)"

    def unsupported_reason(self, params: dict, device: str) -> str | None:
        reason = super().unsupported_reason(params, device)
        if reason:
            return reason
        if params["activations"] == "float8" and device == "cpu":
            return None
        return None

    def _apply(self, model: torch.nn.Module, params: dict) -> list[str]:
        from optimum.quanto import quantize

        names = target_linears(model, params["targets"])
        # quanto's include= matches fnmatch patterns on module names; exact names are patterns too.
        quantize(model, weights=_qtype(params["weights"]), activations=_qtype(params["activations"]),
                 include=names)
        return names

    def quantize_model(self, model, params, calibration=None):
        from optimum.quanto import Calibration, freeze

        self._apply(model, params)
        if self.needs_calibration(params):
            if not calibration:
                raise ValueError("quanto activation quantisation needs a calibration set")
            with torch.no_grad(), Calibration(momentum=params["calibration_momentum"]):
                for feats in calibration:
                    model.generate(feats, max_new_tokens=24)
        freeze(model)
        return model

    def save(self, model, params, out_dir: Path) -> None:
        from optimum.quanto import quantization_map

        state = {k: v for k, v in model.state_dict().items() if k != "proj_out.weight"}
        save_tensors(state, out_dir)
        write_params(out_dir, self.library, params, {
            "quantization_map": quantization_map(model),
            "output_quantization_disabled": _streamlined(model),
        })

    def load(self, base_model_dir, params, artifact_dir, device):
        from optimum.quanto import requantize

        model = load_fp32(base_model_dir)
        meta = json.loads((artifact_dir / "quantization.json").read_text())
        state = load_tensors(artifact_dir)
        state["proj_out.weight"] = model.proj_out.weight.detach()
        requantize(model, state, meta["quantization_map"], device=torch.device(device))
        for name in meta.get("output_quantization_disabled", []):
            model.get_submodule(name).disable_output_quantization()
        model.tie_weights()
        return model.eval()


def _streamlined(model: torch.nn.Module) -> list[str]:
    """Modules whose output quantisation ``Calibration(streamline=True)`` removed.

    quanto drops the output quantisation of a module whose output feeds an op
    that cannot take a quantised tensor (``add``, ``gelu``...), but does not
    record it in ``quantization_map()``; we record it so a reload computes the
    same function.
    """
    out = []
    for name, mod in model.named_modules():
        hook = getattr(mod, "_quantize_hooks", {}).get("output")
        if hook is not None and hook.id not in mod._forward_hooks:
            out.append(name)
    return sorted(out)
