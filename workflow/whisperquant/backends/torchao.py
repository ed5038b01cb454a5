"""torchao: int8 dynamic-activation/int8-weight and int8 weight-only.

torchao is the successor of ``torch.ao.quantization`` (deprecated); its
quantisation API is ``quantize_(model, config, filter_fn=...)``, which
replaces the ``weight`` of each selected ``nn.Linear`` by a tensor subclass
(``Int8Tensor`` in torchao 0.18) holding int8 data and float scales
(torchao docs, "Quantization Overview" and ``quantize_`` API reference,
https://docs.pytorch.org/ao/stable/quantization_overview.html).

* ``config: int8_dynamic_activation_int8_weight`` --
  ``Int8DynamicActivationInt8WeightConfig``: int8 weights, and each linear's
  input is quantised to int8 *at run time* from its own range (per token for
  ``granularity: per_channel``, per tensor otherwise), then an int8 x int8
  matmul with int32 accumulation.  Dynamic: nothing is calibrated.
* ``config: int8_weight_only`` -- ``Int8WeightOnlyConfig``: int8 weights,
  float activations; the matmul runs in float on the int8 weight and its
  scale.  Weight-only.

``granularity`` is torchao's ``PerRow()`` (one scale per output channel, the
default of both configs) or ``PerTensor()``; weights are symmetric int8.

Saving: the tensor subclass does not go through ``safetensors`` as is.  Each
quantised weight is decomposed into plain tensors (``qdata`` int8, ``scale``
fp32 and, if present, ``zero_point``) and rebuilt on load as an ``Int8Tensor``
with the same block size and activation settings, which are derived from the
scheme's parameters (stored in ``quantization.json``).  No pickle is involved.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .base import Backend, load_fp32, register, target_linears, write_params
from .serialization import float_state, load_float_state, load_tensors, save_tensors

_CONFIGS = ("int8_dynamic_activation_int8_weight", "int8_weight_only")


def _granularity(name: str):
    from torchao.quantization import PerRow, PerTensor

    return PerRow() if name == "per_channel" else PerTensor()


def _ao_config(params: dict):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    g = _granularity(params["granularity"])
    # set_inductor_config only tunes torch.compile, which this pipeline does not use.
    if params["config"] == "int8_dynamic_activation_int8_weight":
        return Int8DynamicActivationInt8WeightConfig(granularity=g, set_inductor_config=False)
    return Int8WeightOnlyConfig(granularity=g, set_inductor_config=False)


def _int8_tensor_class():
    from torchao.quantization import Int8Tensor

    return Int8Tensor


@register
class TorchAO(Backend):
    library = "torchao"
    parameters = {
        "config": (_CONFIGS, "int8_dynamic_activation_int8_weight"),
        "granularity": (("per_channel", "per_tensor"), "per_channel"),
    }
    devices = ("cpu",)

    def bits(self, params: dict) -> float:
        return 8.0

    def method(self, params: dict) -> str:
        gran = params["granularity"].replace("_", "-")
        if params["config"] == "int8_weight_only":
            return f"int8 weight-only {gran} (activations float)"
        act = "per-token" if params["granularity"] == "per_channel" else "per-tensor"
        return f"int8 weights {gran}, dynamic int8 activations {act}"

    def quantize_model(self, model, params, calibration=None):
        from torchao.quantization import quantize_

        names = set(target_linears(model, params["targets"]))
        quantize_(model, _ao_config(params),
                  filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear) and fqn in names)
        cls = _int8_tensor_class()
        missed = [n for n in names if not isinstance(model.get_submodule(n).weight, cls)]
        if missed:
            raise RuntimeError(f"torchao left {len(missed)} target Linear(s) unquantised, e.g. {missed[0]}")
        return model

    def save(self, model, params, out_dir: Path) -> None:
        cls = _int8_tensor_class()
        tensors: dict[str, torch.Tensor] = {}
        names = []
        for name, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if isinstance(mod, torch.nn.Linear) and isinstance(w, cls):
                names.append(name)
                tensors[f"{name}.weight_qdata"] = w.qdata
                tensors[f"{name}.weight_scale"] = w.scale
                if w.zero_point is not None:
                    tensors[f"{name}.weight_zero_point"] = w.zero_point
                if mod.bias is not None:
                    tensors[f"{name}.bias"] = mod.bias.detach()
        tensors.update(float_state(model, names))
        save_tensors(tensors, out_dir)
        write_params(out_dir, self.library, params, {"quantized_modules": sorted(names)})

    def load(self, base_model_dir, params, artifact_dir, device):
        from torchao.quantization.quantize_.workflows import QuantizeTensorToInt8Kwargs
        from torchao.quantization.utils import get_block_size

        cls = _int8_tensor_class()
        model = load_fp32(base_model_dir)
        tensors = load_tensors(artifact_dir)
        g = _granularity(params["granularity"])
        act = (QuantizeTensorToInt8Kwargs(granularity=g)
               if params["config"] == "int8_dynamic_activation_int8_weight" else None)
        for name in target_linears(model, params["targets"]):
            lin = model.get_submodule(name)
            qdata = tensors.pop(f"{name}.weight_qdata")
            scale = tensors.pop(f"{name}.weight_scale")
            zp = tensors.pop(f"{name}.weight_zero_point", None)
            block = list(get_block_size(tuple(qdata.shape), g))
            w = cls(qdata, scale, block, torch.float32, zero_point=zp, act_quant_kwargs=act)
            lin.weight = torch.nn.Parameter(w, requires_grad=False)
            if lin.bias is not None:
                lin.bias.data.copy_(tensors.pop(f"{name}.bias"))
        load_float_state(model, tensors)
        return model.eval()
