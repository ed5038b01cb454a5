"""HQQ (Half-Quadratic Quantization): calibration-free weight-only 1-8 bit.

Each target ``nn.Linear`` is swapped for ``hqq.core.quantize.HQQLinear`` with
``BaseQuantizeConfig(nbits, group_size, axis)``; transformers' ``HqqConfig``
and hqq's ``AutoHQQHFModel`` fail on Whisper's encoder-decoder, so the swap is
done here.  Weights are grouped along ``axis`` in groups of ``group_size``
with a float scale and zero per group; compute runs in float32 on CPU.

Bit-widths: hqq 0.2.8's ``Quantizer.SUPPORTED_BITS`` also lists 5, 6 and
1.58, but stores them unpacked (``bit_to_packing``: 5 and 6 -> ``8bit_u8``,
1.58 -> ``2bit_u8``, "todo: bitpacking"), so such an artifact is exactly as
large as the 8-bit (2-bit) one; the study offers only the widths hqq really
packs: 1, 2, 3 (10 values per int32), 4 and 8.

Size: the artifact stores the scale and zero of each group in ``meta_dtype``
-- float16 by default, as hqq keeps them in its usual float16 setting --
i.e. 32 bits per group: 1 bit per weight at group 32, 0.5 at 64, 0.25 at
128 (``meta_dtype: float32``: twice that).  On CPU they are cast to float32
when the model is loaded, because the dequantisation runs in the compute
dtype; ``model_mem_mb`` shows that.  (hqq's quantised meta-data,
``quant_zero``/``quant_scale``, is deprecated and "not supported for
quantized model serialization".)
"""

from __future__ import annotations

from ..errors import SchemeError
from ..linear_swap import LinearSwapBackend
from ..modules import set_module, target_linears

_BITS = (1, 2, 3, 4, 8)
#: bits a weight takes once packed (hqq's ``bit_to_packing``: 3-bit packs 10 values in 32 bits)
_PACKED_BITS = {1: 1.0, 2: 2.0, 3: 3.2, 4: 4.0, 8: 8.0}
#: the per-group meta-data stored in ``meta_dtype`` (cast to the compute dtype when loaded)
_META = ("scale", "zero")


def _config(params: dict, bits: int | None = None) -> dict:
    from hqq.core.quantize import BaseQuantizeConfig

    return BaseQuantizeConfig(nbits=bits or params["bits"], group_size=params["group_size"], axis=params["axis"])


class HQQ(LinearSwapBackend):
    library = "hqq"
    parameters = {
        "bits": (_BITS, 4),
        "group_size": ((16, 32, 64, 128, 256), 64),
        "axis": ((0, 1), 1),
        "meta_dtype": (("float16", "float32"), "float16"),
    }
    devices = ("cpu", "cuda")
    per_layer_bits = True

    def bits(self, params: dict) -> float:
        return float(params["bits"])

    def compute_dtype(self, params: dict, device: str) -> str:
        return "float32" if device == "cpu" else "float16"  # weights dequantised per forward

    def method(self, params: dict) -> str:
        return (f"{params['bits']}-bit weight-only, group {params['group_size']} (axis {params['axis']}), "
                f"{params['meta_dtype']} scales and zeros")

    def weight_bytes(self, params: dict, numel: int, bits) -> float:
        """Packed weights (3-bit: 10 values per int32) plus a scale and a zero per group in ``meta_dtype``."""
        if bits == "float":
            return super().weight_bytes(params, numel, bits)
        meta = 2 if params["meta_dtype"] == "float16" else 4
        return numel * _PACKED_BITS[bits] / 8 + numel / params["group_size"] * 2 * meta

    def check_model(self, scheme: str, params: dict, dims: dict) -> None:
        g = params["group_size"]
        for key in ("d_model", "ffn_dim"):
            if key in dims and dims[key] % g:
                raise SchemeError(
                    f"schemes.{scheme}.group_size: {g} does not divide the layer width {key}={dims[key]}"
                )

    def _compute_dtype(self, device: str):
        import torch

        return torch.float32 if device == "cpu" else torch.float16

    def quantize_model(self, model, params, calibration=None, device: str = "cpu"):
        import torch
        from hqq.core.quantize import HQQLinear

        meta = getattr(torch, params["meta_dtype"])
        layer_bits = params.get("layer_bits") or {}  # a mixed-precision plan's other widths
        for name in target_linears(model, params["targets"]):
            q = HQQLinear(model.get_submodule(name), _config(params, layer_bits.get(name)),
                          compute_dtype=self._compute_dtype(device), device=device)
            for k in _META:  # rounded as the artifact stores them: the model evaluated is the one saved
                q.meta[k] = q.meta[k].to(meta).to(q.meta[k].dtype)
            set_module(model, name, q)
        return model

    def quantized_key(self, name, module):
        from hqq.core.quantize import HQQLinear

        return name if isinstance(module, HQQLinear) else None

    def module_tensors(self, model, key, module, params):
        import torch

        meta = getattr(torch, params["meta_dtype"])
        return {k: (v.to(meta) if k in _META else v) for k, v in module.state_dict().items()
                if isinstance(v, torch.Tensor)}

    def rebuild(self, linear, tensors, params, device):
        from hqq.core.quantize import HQQLinear

        compute = self._compute_dtype(device)
        # the stored state carries the layer's own nbits (a mixed plan's width), which load_state_dict restores
        q = HQQLinear(None, _config(params), compute_dtype=compute, device=device, initialize=False)
        q.load_state_dict({k: (v.to(compute) if k in _META else v) for k, v in tensors.items()})
        tensors.clear()
        return q
