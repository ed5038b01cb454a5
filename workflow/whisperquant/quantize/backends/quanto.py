"""optimum-quanto: int8/int4/int2/float8 weights, optionally int8/float8 activations.

Which calls make a quanto scheme weight-only ("dynamic") or static, quoting
the optimum-quanto 0.2.7 README ("Quantization workflow for vanilla pytorch
models (low-level API)" and "Modules",
https://github.com/huggingface/optimum-quanto#quantization-workflow-for-vanilla-pytorch-models-low-level-api):

* ``quantize(model, weights=qint8)`` -- "converts a standard float model into
  a dynamically quantized model ... only the inference of the model is
  modified to dynamically quantize the weights".  quanto's own word
  "dynamic" here is about the *weights* (re-quantised at every forward until
  frozen); ``freeze(model)`` then "replaces float weights by quantized integer
  weights".  With ``activations=None`` (our ``activations: none``) the inputs
  stay float: **weight-only** -- the study's quanto "dynamic" scheme, in the
  sense that nothing about activations is fixed in advance.
* ``quantize(model, weights=..., activations=qint8 | qfloat8)`` -- inputs and
  outputs of each QLinear are quantised "per-tensor using *static* scales
  (defaults to the range [-1, 1])"; "to preserve accuracy, the model needs to
  be calibrated": running samples ``with Calibration(momentum=0.9):`` records
  the ranges ("This automatically activates the quantization of the
  activations").  That is **static** activation quantisation, so such a scheme
  requires a calibration set (``needs_calibration``).

Granularity (quanto ``nn/qmodule.py``): int8/float8 weights have one scale per
output channel (axis 0); int4/int2 weights are grouped along the input in
groups of 128 (reduced by 32 until it divides the width, per channel if the
width is <= 128), with a scale and a shift per group.

Only the encoder and decoder Linears selected by ``targets`` are quantised.
quanto has no speech-seq2seq save/load wrapper; we store the frozen state dict
as safetensors with ``quantization_map()`` in JSON and rebuild with
``requantize()``.  4- and 2-bit kernels fail under ``torch.inference_mode`` on
CPU, so inference uses ``torch.no_grad``.  Every weight x activation
combination (float8 activations included) runs ``generate()`` on CPU with
torch 2.13 (checked on a random-weight Whisper, tests/test_backends.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..calibration import run_calibration
from ..linear_swap import load_tensors, save_tensors
from ..modules import ModuleBackend, skeleton, target_linears, write_params

_WEIGHTS = ("int8", "int4", "int2", "float8")
_ACTIVATIONS = ("none", "int8", "float8")


def _qtype(name: str):
    from optimum import quanto

    return {"int8": quanto.qint8, "int4": quanto.qint4, "int2": quanto.qint2,
            "float8": quanto.qfloat8, "none": None}[name]


class Quanto(ModuleBackend):
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

    def compute_dtype(self, params: dict, device: str) -> str:
        act = params["activations"]
        if act == "int8":
            return "int8"
        if act == "float8":
            return "float8 (emulated)" if device == "cpu" else "float8"
        return "float32" if device == "cpu" else "float16"

    def method(self, params: dict) -> str:
        gran = "per-channel" if params["weights"] in ("int8", "float8") else "groups of <=128"
        w = f"{params['weights']} weights {gran}"
        if params["activations"] == "none":
            return f"{w}, weight-only (activations float)"
        return f"{w}, static (calibrated) {params['activations']} activations per-tensor"

    def _apply(self, model, params: dict) -> list[str]:
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
            with Calibration(momentum=params["calibration_momentum"]):
                run_calibration(model, calibration, "quanto activation quantisation")
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
        import torch
        from optimum.quanto import requantize

        model = skeleton(base_model_dir)  # quanto's requantize fills a meta model: no fp32 copy on the way
        meta = json.loads((artifact_dir / "quantization.json").read_text())
        state = load_tensors(artifact_dir)
        state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]  # tied, stored once
        requantize(model, state, meta["quantization_map"], device=torch.device(device))
        for name in meta.get("output_quantization_disabled", []):
            model.get_submodule(name).disable_output_quantization()
        model.tie_weights()
        return model.eval()


def _streamlined(model) -> list[str]:
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
