"""torchao: int8 weights with dynamic, static (calibrated) or no activation quantisation.

torchao is the successor of ``torch.ao.quantization`` (deprecated); its API is
``quantize_(model, config, filter_fn=...)``, which replaces the ``weight`` of
each selected ``nn.Linear`` by a tensor subclass -- ``Int8Tensor`` in torchao
0.18: int8 ``qdata``, float ``scale`` and the activation settings -- and
dispatches ``F.linear`` on it (torchao docs, "Quantization Overview" and the
``quantize_`` API reference, https://docs.pytorch.org/ao/stable/quantization_overview.html;
``torchao/quantization/quant_api.py`` and
``torchao/quantization/quantize_/workflows/int8/int8_tensor.py`` in 0.18.0).

``config`` selects the scheme:

* ``int8_dynamic_activation_int8_weight`` --
  ``Int8DynamicActivationInt8WeightConfig``: each linear's input is quantised
  to int8 *at run time* from its own range (per token with
  ``granularity: per_channel``, per tensor otherwise), then int8 x int8 ->
  int32 matmul, rescaled to float.  **Dynamic**: nothing is calibrated.
* ``int8_static_activation_int8_weight`` --
  ``Int8StaticActivationInt8WeightConfig(act_quant_scale=...)``: the input
  scale of each linear is fixed in advance from the min/max of its inputs over
  the calibration set (forward passes through ``generate``), per tensor.
  **Static**: requires a calibration set.  Unlike torch.ao's eager static
  ``quantized.Linear``, the int8 matmul's output is returned in float, not
  requantised to 8 bits; see ``pytorch.py`` for why that matters for Whisper.
* ``int8_weight_only`` -- ``Int8WeightOnlyConfig``: int8 weights, float
  activations; the matmul runs in float on int8 weight x scale.
  **Weight-only**.

``granularity`` of the weights is torchao's ``PerRow()`` (one scale per
output channel, the default of all three configs) or ``PerTensor()``; weights
are symmetric int8.  ``act_mapping`` is the activation quantiser's mapping
(symmetric, torchao's default, or asymmetric with a zero point).

Saving: the tensor subclass does not go through ``safetensors`` as it is.
Each quantised weight is decomposed into plain tensors (``qdata`` int8,
``scale`` fp32, ``zero_point`` int8, and for static schemes the activation
scale and zero point) and rebuilt on load as an ``Int8Tensor`` with the block
size and activation settings that the scheme's parameters (in
``quantization.json``) determine.  No pickle is involved.
"""

from __future__ import annotations

from ..base import target_linears
from ..calibration import run_calibration
from ..linear_swap import LinearSwapBackend
from ..registry import SchemeError

_DYNAMIC, _STATIC, _WEIGHT_ONLY = (
    "int8_dynamic_activation_int8_weight", "int8_static_activation_int8_weight", "int8_weight_only")
_CONFIGS = (_DYNAMIC, _STATIC, _WEIGHT_ONLY)


def _granularity(name: str):
    from torchao.quantization import PerRow, PerTensor

    return PerRow() if name == "per_channel" else PerTensor()


def _mapping(params: dict):
    from torchao.quantization import MappingType

    return MappingType.ASYMMETRIC if params["act_mapping"] == "asymmetric" else MappingType.SYMMETRIC


def _act_kwargs(params: dict):
    """The activation quantiser attached to each weight (None for weight-only)."""
    from torchao.quantization import PerTensor
    from torchao.quantization.quantize_.workflows import QuantizeTensorToInt8Kwargs

    if params["config"] == _WEIGHT_ONLY:
        return None
    # Dynamic activations follow the weight granularity (PerRow = per token);
    # static ones have one calibrated scale per tensor.
    g = _granularity(params["granularity"]) if params["config"] == _DYNAMIC else PerTensor()
    return QuantizeTensorToInt8Kwargs(granularity=g, mapping_type=_mapping(params))


def _int8_tensor_class():
    from torchao.quantization import Int8Tensor

    return Int8Tensor


class TorchAO(LinearSwapBackend):
    library = "torchao"
    parameters = {
        "config": (_CONFIGS, _DYNAMIC),
        "granularity": (("per_channel", "per_tensor"), "per_channel"),
        "act_mapping": (("symmetric", "asymmetric"), "symmetric"),
    }
    devices = ("cpu",)

    def check(self, scheme: str, params: dict) -> None:
        if params["config"] == _WEIGHT_ONLY and params["act_mapping"] != "symmetric":
            raise SchemeError(f"schemes.{scheme}.act_mapping: int8_weight_only does not quantise activations")

    def needs_calibration(self, params: dict) -> bool:
        return params["config"] == _STATIC

    def bits(self, params: dict) -> float:
        return 8.0

    def compute_dtype(self, params: dict, device: str) -> str:
        return "float32" if params["config"] == _WEIGHT_ONLY else "int8"

    def method(self, params: dict) -> str:
        gran = params["granularity"].replace("_", "-")
        if params["config"] == _WEIGHT_ONLY:
            return f"int8 weight-only {gran} (activations float)"
        if params["config"] == _STATIC:
            return (f"int8 weights {gran}, static (calibrated) int8 activations per-tensor "
                    f"{params['act_mapping']}, float output")
        act = "per-token" if params["granularity"] == "per_channel" else "per-tensor"
        return f"int8 weights {gran}, dynamic int8 activations {act} {params['act_mapping']}"

    # ------------------------------------------------------------------ quantise
    def quantize_model(self, model, params, calibration=None):
        import torch
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        names = target_linears(model, params["targets"])
        g = _granularity(params["granularity"])
        # set_inductor_config only tunes torch.compile, which this pipeline does not use.
        if params["config"] == _STATIC:
            self._quantize_static(model, names, params, calibration)
        else:
            if params["config"] == _DYNAMIC:
                config = Int8DynamicActivationInt8WeightConfig(
                    granularity=g, act_mapping_type=_mapping(params), set_inductor_config=False)
            else:
                config = Int8WeightOnlyConfig(granularity=g, set_inductor_config=False)
            wanted = set(names)
            quantize_(model, config, filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear) and fqn in wanted)
        cls = _int8_tensor_class()
        missed = [n for n in names if not isinstance(model.get_submodule(n).weight, cls)]
        if missed:
            raise RuntimeError(f"torchao left {len(missed)} target Linear(s) unquantised, e.g. {missed[0]}")
        return model

    def _quantize_static(self, model, names, params, calibration) -> None:
        """Observe each target's input range over the calibration set, then fix its scale."""
        from torchao.quantization import Int8StaticActivationInt8WeightConfig, quantize_

        ranges: dict[str, list[float]] = {}

        def observer(name):
            def hook(mod, args):
                x = args[0].detach()
                r = ranges.setdefault(name, [float("inf"), float("-inf")])
                r[0], r[1] = min(r[0], x.min().item()), max(r[1], x.max().item())
            return hook

        handles = [model.get_submodule(n).register_forward_pre_hook(observer(n)) for n in names]
        try:
            run_calibration(model, calibration, "torchao int8_static_activation_int8_weight")
        finally:
            for h in handles:
                h.remove()
        for n in names:
            if n not in ranges:
                raise RuntimeError(f"calibration never reached {n}")
            scale, zp = _static_qparams(*ranges[n], _mapping(params))
            config = Int8StaticActivationInt8WeightConfig(
                act_quant_scale=scale, act_quant_zero_point=zp, granularity=[_tensor(), _granularity(
                    params["granularity"])], act_mapping_type=_mapping(params), set_inductor_config=False)
            quantize_(model.get_submodule(n), config, filter_fn=lambda mod, fqn: fqn == "")

    # ------------------------------------------------------------------ save / load
    _ATTRS = ("qdata", "scale", "zero_point", "act_quant_scale", "act_quant_zero_point")

    def quantized_key(self, name, module):
        import torch

        w = getattr(module, "weight", None)
        return name if isinstance(module, torch.nn.Linear) and isinstance(w, _int8_tensor_class()) else None

    def module_tensors(self, model, key, module, params):
        t = {f"weight_{a}": getattr(module.weight, a) for a in self._ATTRS if getattr(module.weight, a) is not None}
        if module.bias is not None:
            t["bias"] = module.bias.detach()
        return t

    def rebuild(self, linear, tensors, params, device):
        import torch
        from torchao.quantization.utils import get_block_size

        t = {a: tensors.pop(f"weight_{a}", None) for a in self._ATTRS}
        if t["qdata"] is None:
            raise KeyError("artifact has no quantised weight (weight_qdata)")
        block = list(get_block_size(tuple(t["qdata"].shape), _granularity(params["granularity"])))
        w = _int8_tensor_class()(t["qdata"], t["scale"], block, torch.float32, zero_point=t["zero_point"],
                                 act_quant_scale=t["act_quant_scale"], act_quant_zero_point=t["act_quant_zero_point"],
                                 act_quant_kwargs=_act_kwargs(params))
        linear.weight = torch.nn.Parameter(w, requires_grad=False)
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(tensors.pop("bias"), requires_grad=False)
        return linear


def _tensor():
    from torchao.quantization import PerTensor

    return PerTensor()


def _static_qparams(lo: float, hi: float, mapping):
    """Per-tensor int8 scale (and zero point) for an observed range, by torchao's own formula.

    Shaped (1, 1, 1): Whisper's linear inputs are (batch, time, features) and
    torchao checks that a static scale has the activation's rank.
    """
    import torch
    from torchao.quantization import MappingType
    from torchao.quantization.quant_primitives import choose_qparams_affine_with_min_max

    scale, zp = choose_qparams_affine_with_min_max(
        torch.tensor([lo]), torch.tensor([hi]), mapping, (1,), torch.int8,
        eps=torch.finfo(torch.float32).eps, scale_dtype=torch.float32, zero_point_dtype=torch.int8)
    scale = scale.reshape(1, 1, 1)
    zp = zp.reshape(1, 1, 1) if mapping == MappingType.ASYMMETRIC else None
    return scale, zp
