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

``smoothquant: true`` (with ``smoothquant_alpha``, 0.5 by default) adds
SmoothQuant (Xiao et al., 2023, arXiv:2211.10438) to a static or dynamic
scheme: an input channel j of a Linear whose activations carry outliers is
divided by s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha) and the weight's column
j multiplied by it, so the product is unchanged while the activation's range
is flattened before it is quantised per tensor (or per token).  The factor is
torchao's own (``torchao.prototype.smoothquant``, ``SmoothQuantObserver``);
as torchao does, 1/s is kept on the weight as ``Int8Tensor.act_pre_scale``
and applied to the activation at run time rather than folded into the
LayerNorm before the Linear, which is why every target Linear can be smoothed,
also those fed by attention or by GELU.  torchao's own pipeline is not called:
its memory-bounded two-pass observer fails on a static config in 0.18
(``RunningAbsMaxSmoothQuantObserver.calculate_qparams`` calls ``.get`` on a
``QuantizeTensorToInt8Kwargs``: AttributeError), and its other observer keeps
every calibration input (several GB for the encoder of base).  Here one pass
records each input channel's min and max; the factor and the static range of
the smoothed input x/s follow from them exactly (s > 0), so one calibration
pass serves both.

Saving: the tensor subclass does not go through ``safetensors`` as it is.
Each quantised weight is decomposed into plain tensors (``qdata`` int8,
``scale`` fp32, ``zero_point`` int8, and for static schemes the activation
scale and zero point) and rebuilt on load as an ``Int8Tensor`` with the block
size and activation settings that the scheme's parameters (in
``quantization.json``) determine.  No pickle is involved.
"""

from __future__ import annotations

from ..calibration import run_calibration
from ..errors import SchemeError
from ..linear_swap import LinearSwapBackend
from ..modules import target_linears

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
        "smoothquant": (bool, False),
        "smoothquant_alpha": (float, 0.5),
    }
    devices = ("cpu",)

    def check(self, scheme: str, params: dict) -> None:
        if params["config"] == _WEIGHT_ONLY and params["act_mapping"] != "symmetric":
            raise SchemeError(f"schemes.{scheme}.act_mapping: int8_weight_only does not quantise activations")
        if params["smoothquant"] and params["config"] == _WEIGHT_ONLY:
            raise SchemeError(f"schemes.{scheme}.smoothquant: int8_weight_only has no activation quantiser to "
                              "smooth for")
        if not 0.0 <= params["smoothquant_alpha"] <= 1.0:
            raise SchemeError(f"schemes.{scheme}.smoothquant_alpha: {params['smoothquant_alpha']} is outside [0, 1]")

    def needs_calibration(self, params: dict) -> bool:
        return params["config"] == _STATIC or params["smoothquant"]

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
                    f"{params['act_mapping']}, float output{_sq(params)}")
        act = "per-token" if params["granularity"] == "per_channel" else "per-tensor"
        return f"int8 weights {gran}, dynamic int8 activations {act} {params['act_mapping']}{_sq(params)}"

    # ------------------------------------------------------------------ quantise
    def quantize_model(self, model, params, calibration=None):
        import torch
        from torchao.quantization import (
            Int8WeightOnlyConfig,
            quantize_,
        )

        names = target_linears(model, params["targets"])
        g = _granularity(params["granularity"])
        # set_inductor_config only tunes torch.compile, which this pipeline does not use.
        if self.needs_calibration(params):
            self._quantize_calibrated(model, names, params, calibration)
        else:
            if params["config"] == _DYNAMIC:
                config = _dynamic_config(params)
            else:
                config = Int8WeightOnlyConfig(granularity=g, set_inductor_config=False)
            wanted = set(names)
            quantize_(model, config, filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear) and fqn in wanted)
        cls = _int8_tensor_class()
        missed = [n for n in names if not isinstance(model.get_submodule(n).weight, cls)]
        if missed:
            raise RuntimeError(f"torchao left {len(missed)} target Linear(s) unquantised, e.g. {missed[0]}")
        return model

    def _quantize_calibrated(self, model, names, params, calibration) -> None:
        """Observe each target's input channels over the calibration set, then smooth and/or fix its scale."""
        import torch
        from torchao.quantization import Int8StaticActivationInt8WeightConfig, quantize_

        ranges: dict[str, list[torch.Tensor]] = {}

        def observer(name):
            def hook(mod, args):
                x = args[0].detach().reshape(-1, args[0].shape[-1])
                lo, hi = x.amin(dim=0), x.amax(dim=0)
                r = ranges.get(name)
                ranges[name] = [lo, hi] if r is None else [torch.minimum(r[0], lo), torch.maximum(r[1], hi)]
            return hook

        handles = [model.get_submodule(n).register_forward_pre_hook(observer(n)) for n in names]
        try:
            run_calibration(model, calibration, f"torchao {params['config']}{_sq(params)}")
        finally:
            for h in handles:
                h.remove()
        mapping = _mapping(params)
        for n in names:
            if n not in ranges:
                raise RuntimeError(f"calibration never reached {n}")
            lo, hi = ranges[n]
            linear = model.get_submodule(n)
            pre_scale = None
            if params["smoothquant"]:
                s = smoothing_factor(lo, hi, linear.weight.detach(), params["smoothquant_alpha"])
                linear.weight.data.mul_(s)
                lo, hi, pre_scale = lo / s, hi / s, 1.0 / s
            if params["config"] == _STATIC:
                scale, zp = _static_qparams(lo.min().item(), hi.max().item(), mapping)
                config = Int8StaticActivationInt8WeightConfig(
                    act_quant_scale=scale, act_quant_zero_point=zp, granularity=[_tensor(), _granularity(
                        params["granularity"])], act_mapping_type=mapping, set_inductor_config=False)
            else:
                config = _dynamic_config(params)
            quantize_(linear, config, filter_fn=lambda mod, fqn: fqn == "")
            if pre_scale is not None:
                linear.weight.act_pre_scale = pre_scale

    # ------------------------------------------------------------------ save / load
    _ATTRS = ("qdata", "scale", "zero_point", "act_quant_scale", "act_quant_zero_point", "act_pre_scale")

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
                                 act_pre_scale=t["act_pre_scale"], act_quant_kwargs=_act_kwargs(params))
        linear.weight = torch.nn.Parameter(w, requires_grad=False)
        if linear.bias is not None:
            linear.bias = torch.nn.Parameter(tensors.pop("bias"), requires_grad=False)
        return linear


def _dynamic_config(params: dict):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig(granularity=_granularity(params["granularity"]),
                                                 act_mapping_type=_mapping(params), set_inductor_config=False)


def _sq(params: dict) -> str:
    return f", SmoothQuant alpha {params['smoothquant_alpha']:g}" if params["smoothquant"] else ""


def smoothing_factor(lo, hi, weight, alpha: float):
    """SmoothQuant's per-input-channel factor s_j = max|x_j|^alpha / max|W_:,j|^(1-alpha).

    ``lo``/``hi``: each input channel's min and max over the calibration set;
    ``weight``: (out, in).  The formula, eps included, is torchao's
    (``SmoothQuantObserver.calculate_qparams``), so the factor is the library's.
    """
    import torch

    eps = torch.finfo(torch.float32).eps
    x_abs_max = torch.maximum(lo.abs(), hi.abs())
    w_abs_max = weight.abs().amax(dim=0)
    return (x_abs_max + eps).pow(alpha) / (w_abs_max + eps).pow(1 - alpha)


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
