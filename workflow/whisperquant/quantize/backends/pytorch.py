"""PyTorch's own int8 quantisation (torch.ao.quantization, eager mode).

* ``mode: dynamic`` -- ``quantize_dynamic``: int8 weights (per tensor or per
  output channel) and activations quantised on the fly per call from their
  observed range, output in float.  The study's "PyTorch dynamic int8".
  (torch's dynamic Linear always runs its kernel with ``reduce_range=True``.)
* ``mode: static`` -- calibrated activation observers.  Whole-model eager
  ``prepare`` and FX tracing fail on Whisper, so each target Linear is wrapped
  as ``QuantStub -> Linear -> DeQuantStub`` and prepared/converted on its own;
  activation scales come from forward passes (``generate``) over the
  calibration set.  ``observer`` (``minmax`` | ``histogram``), ``granularity``
  of the weights and ``reduce_range`` are parameters.

Static int8 and Whisper (measured on tiny.en, 2026-11): a static
``torch.ao.nn.quantized.Linear`` takes a quint8 input *and requantises its
output* to quint8 with one calibrated per-tensor scale.  The last encoder
layer's ``fc2`` has extreme output outliers (range about [-610, 133] while
most outputs are within +-1): with an 8-bit output grid of step ~2.9, 87 % of
its outputs become exactly 0, and the transcript collapses ("the", "and").
Quantising that layer's *input* alone costs only 1.4 % relative error; the
output requantisation is the cause.  What helps, in order:
``reduce_range: false`` (full 8 bits instead of torch's x86 default of 7; the
7-bit default with one calibration clip gives "the" for every clip) plus
``observer: histogram`` (torch's x86 default: clips outliers by minimising
the L2 error) and per-channel weights: sane but clearly degraded transcripts;
keeping ``model.encoder.layers.3.fc2`` float through ``targets`` (1 of 96
Linears): transcripts equal to fp32 on the clips tried.  Excluding layers is
never a silent default here.  torchao's ``int8_static_activation_int8_weight``
(``torchao.py``) calibrates the input scale the same way but returns the
matmul output in float, and matches fp32 on the same clips.

``output: float`` is the static variant a competent engineer would run: the
Linear's *input* is quantised with its calibrated static scale and the int8 x
int8 product (int32 accumulation) is rescaled straight to float32 -- nothing is
requantised, so an output outlier costs nothing.  The kernel is fbgemm's
``quantized::linear_with_input_q_dq_qweight_dq_output_fp32`` (the op torch's
reference-quantised-model lowering uses for ``q -> dq -> linear`` with a
quantised weight), measured exact against the integer arithmetic (max error
8e-6 on outputs up to 18) and 3.3x faster than the float32 matmul (256 x 512
by 512 x 2,048, 2 threads, AVX-512 VNNI).  Only the input's observer matters
there; the weight observer and ``granularity`` are as for ``requantized``.

``reduce_range: false`` is exact on x86 CPUs with VNNI (AVX512-VNNI /
AVX-VNNI); without VNNI, fbgemm's ``vpmaddubsw`` path can saturate, which is
why torch defaults to 7 bits; such a CPU is reported as unsupported for this
setting (checked from ``/proc/cpuinfo`` when the grid is planned).

Saved as safetensors: int8 weights, their scales/zero points and, for static,
the activation scale/zero point of each layer.
"""

from __future__ import annotations

from functools import cache

from ..calibration import run_calibration
from ..errors import HostLimitation
from ..linear_swap import LinearSwapBackend
from ..modules import set_module, target_linears


@cache
def _static_wrapper():
    """``QuantStub -> Linear -> DeQuantStub`` around one Linear (a class made on first use: torch is lazy)."""
    import torch
    from torch.ao.quantization import DeQuantStub, QuantStub

    class _Static(torch.nn.Module):
        def __init__(self, linear: torch.nn.Module) -> None:
            super().__init__()
            self.quant = QuantStub()
            self.linear = linear
            self.dequant = DeQuantStub()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            y = self.linear(self.quant(x.reshape(-1, shape[-1])))
            return self.dequant(y).reshape(*shape[:-1], -1)

    return _Static


@cache
def _static_float_output():
    """A static-input, float-output int8 Linear (a class made on first use: torch is lazy)."""
    import torch

    class StaticFloatOutputLinear(torch.nn.Module):
        """int8 weights (packed for fbgemm), the input quantised with a calibrated static scale, float output."""

        def __init__(self, in_features: int, out_features: int, weight, bias, scale: float, zero_point: int) -> None:
            super().__init__()
            self.in_features, self.out_features = in_features, out_features
            self.scale, self.zero_point = float(scale), int(zero_point)
            self._packed = torch.ops.quantized.linear_prepack(weight, bias)

        def weight_bias(self):
            return torch.ops.quantized.linear_unpack(self._packed)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = x.shape
            y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                x.reshape(-1, shape[-1]).contiguous(), self.scale, self.zero_point, self._packed)
            return y.reshape(*shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"input_scale={self.scale:.4g}, input_zero_point={self.zero_point}, output=float32")

    return StaticFloatOutputLinear


def _to_float_output(wrapper):
    """A prepared (observed) ``_Static`` wrapper as a float-output static Linear: the input scale from the
    QuantStub's observer, the weight quantised with the qconfig's weight observer."""
    linear = wrapper.linear
    scale, zp = wrapper.quant.activation_post_process.calculate_qparams()
    observer = wrapper.qconfig.weight()
    observer(linear.weight.detach())
    qw = _quantize_weight(linear.weight.detach(), observer)
    bias = linear.bias.detach() if linear.bias is not None else None
    return _static_float_output()(linear.in_features, linear.out_features, qw, bias, float(scale), int(zp))


def _quantize_weight(weight, observer):
    import torch

    scale, zp = observer.calculate_qparams()
    if observer.qscheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        return torch.quantize_per_channel(weight, scale.double(), zp.to(torch.int64), observer.ch_axis, torch.qint8)
    return torch.quantize_per_tensor(weight, float(scale), int(zp), torch.qint8)


def _x86_without_vnni() -> bool:
    """True on an x86 CPU whose flags lack VNNI; False when unknown or not x86 (evaluate/host.py reads them)."""
    from ...evaluate.host import cpu_facts, lacks

    facts = cpu_facts()
    return facts["machine"].lower() in ("x86_64", "amd64") and lacks(facts, "avx512_vnni", "avx_vnni")


def _no_vnni_reason() -> str:
    from ...evaluate.host import describe, host_record

    return (f"this host ({describe(host_record())}) lacks VNNI (avx512_vnni / avx_vnni), which static int8 with "
            "reduce_range: false needs (fbgemm's non-VNNI kernels can saturate); set reduce_range: true")


def _engine() -> None:
    import torch

    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else engines[-1]


class PyTorch(LinearSwapBackend):
    library = "pytorch"
    parameters = {
        "mode": (("dynamic", "static"), "dynamic"),
        "granularity": (("per_tensor", "per_channel"), "per_tensor"),
        "observer": (("minmax", "histogram"), "histogram"),
        "reduce_range": (bool, False),
        "output": (("requantized", "float"), "requantized"),
    }
    devices = ("cpu",)

    def needs_calibration(self, params: dict) -> bool:
        return params["mode"] == "static"

    def bits(self, params: dict) -> float:
        return 8.0

    def compute_dtype(self, params: dict, device: str) -> str:
        return "int8"  # fbgemm/x86 int8 x int8 -> int32 GEMM, dynamic or static activations

    def method(self, params: dict) -> str:
        w = f"int8 weights {params['granularity'].replace('_', '-')}"
        if params["mode"] == "dynamic":
            return f"{w}, dynamic int8 activations per-tensor (7-bit range, reduce_range), float output"
        bits = 7 if params["reduce_range"] else 8
        out = "float output" if params["output"] == "float" else "output requantised"
        return f"{w}, static (calibrated, {params['observer']}) {bits}-bit activations per-tensor, {out}"

    def unsupported_reason(self, params: dict, device: str) -> str | None:
        reason = super().unsupported_reason(params, device)
        if reason:
            return reason
        if params["mode"] == "static" and not params["reduce_range"] and _x86_without_vnni():
            return _no_vnni_reason()
        return None

    def _qconfig(self, params: dict):
        import torch
        from torch.ao.quantization import QConfig, default_dynamic_qconfig, per_channel_dynamic_qconfig
        from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver

        if params["mode"] == "dynamic":
            return per_channel_dynamic_qconfig if params["granularity"] == "per_channel" else default_dynamic_qconfig
        act = HistogramObserver if params["observer"] == "histogram" else MinMaxObserver
        if params["granularity"] == "per_channel":
            w = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        else:
            w = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        return QConfig(activation=act.with_args(reduce_range=params["reduce_range"]), weight=w)

    def _structure(self, model, params: dict) -> list[str]:
        """Swap target Linears for (unconverted) wrappers; returns their names."""
        names = target_linears(model, params["targets"])
        if params["mode"] == "static":
            qconfig = self._qconfig(params)
            for n in names:
                w = _static_wrapper()(model.get_submodule(n))
                w.qconfig = qconfig
                if params["output"] == "float":
                    w.linear.qconfig = None  # its output is never requantised: no observer on it in calibration
                set_module(model, n, w)
        return names

    def _check_host(self, params: dict) -> None:
        """The planning host decided the config; a job on another node (a cluster) checks its own CPU."""
        if params["mode"] == "static" and not params["reduce_range"] and _x86_without_vnni():
            raise HostLimitation(_no_vnni_reason())

    def quantize_model(self, model, params, calibration=None):
        import torch
        from torch.ao.quantization import convert, prepare, quantize_dynamic

        self._check_host(params)
        _engine()
        if params["mode"] == "dynamic":
            names = target_linears(model, params["targets"])
            spec = dict.fromkeys(names, self._qconfig(params))
            return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
        names = self._structure(model, params)
        for n in names:
            prepare(model.get_submodule(n), inplace=True)
        run_calibration(model, calibration, "static quantisation")
        for n in names:
            if params["output"] == "float":
                set_module(model, n, _to_float_output(model.get_submodule(n)))
            else:
                convert(model.get_submodule(n), inplace=True)
        return model

    # ---- save / load: the quantised Linears' int8 weights, scales and activation qparams
    def quantized_key(self, name, module):
        from torch.ao.nn.quantized import Linear as StaticQLinear

        if isinstance(module, _static_float_output()):
            return name
        if not isinstance(module, StaticQLinear):  # DynamicQLinear subclasses StaticQLinear
            return None
        return name[: -len(".linear")] if name.endswith(".linear") else name

    def module_tensors(self, model, key, module, params):
        import torch
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQLinear

        float_output = isinstance(module, _static_float_output())
        w, b = module.weight_bias() if float_output else module._weight_bias()
        t = {"weight_int8": w.int_repr()}
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            t["weight_scale"] = w.q_per_channel_scales().float()
            t["weight_zero_point"] = w.q_per_channel_zero_points().to(torch.int64)
        else:
            t["weight_scale"] = torch.tensor([w.q_scale()], dtype=torch.float32)
            t["weight_zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        if b is not None:
            t["bias"] = b.detach()
        if float_output:
            t["input_scale"] = torch.tensor([module.scale], dtype=torch.float32)
            t["input_zero_point"] = torch.tensor([module.zero_point], dtype=torch.int64)
        elif not isinstance(module, DynamicQLinear):
            t["act_scale"] = torch.tensor([float(module.scale)], dtype=torch.float32)
            t["act_zero_point"] = torch.tensor([int(module.zero_point)], dtype=torch.int64)
            parent = model.get_submodule(key)
            t["input_scale"] = parent.quant.scale.detach().float().reshape(1)
            t["input_zero_point"] = parent.quant.zero_point.detach().to(torch.int64).reshape(1)
        return t

    def load(self, base_model_dir, params, artifact_dir, device):
        self._check_host(params)
        _engine()
        return super().load(base_model_dir, params, artifact_dir, device)

    def rebuild(self, linear, tensors, params, device):
        import torch
        from torch.ao.nn.quantized import DeQuantize, Quantize
        from torch.ao.nn.quantized import Linear as StaticQLinear
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQLinear

        scale, zp = tensors.pop("weight_scale"), tensors.pop("weight_zero_point")
        wint = tensors.pop("weight_int8")
        if scale.numel() > 1:
            qw = torch._make_per_channel_quantized_tensor(wint, scale.double(), zp, 0)
        else:
            qw = torch._make_per_tensor_quantized_tensor(wint, float(scale), int(zp))
        bias = tensors.pop("bias", None)
        if params["mode"] == "dynamic":
            q = DynamicQLinear(linear.in_features, linear.out_features, dtype=torch.qint8)
            q.set_weight_bias(qw, bias)
            return q
        if params["output"] == "float":
            return _static_float_output()(linear.in_features, linear.out_features, qw, bias,
                                          float(tensors.pop("input_scale")), int(tensors.pop("input_zero_point")))
        q = StaticQLinear(linear.in_features, linear.out_features)
        q.set_weight_bias(qw, bias)
        q.scale = float(tensors.pop("act_scale"))
        q.zero_point = int(tensors.pop("act_zero_point"))
        w = _static_wrapper()(q)
        w.quant = Quantize(float(tensors.pop("input_scale")), int(tensors.pop("input_zero_point")), torch.quint8)
        w.dequant = DeQuantize()
        return w
