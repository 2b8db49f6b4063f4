"""Dynamic int8 quantization of Linear layers: the standard for BERT-class models.

Weights are int8 symmetric per output channel, fixed at conversion; activations are
quantized at run time, exactly as ONNX's DynamicQuantizeLinear defines it:
``x_min = min(0, min x)``, ``x_max = max(0, max x)``, ``s = (x_max - x_min) / 255``,
``z = saturate(round(-x_min / s))``, ``q = saturate(round(x / s) + z)`` (uint8), either over
the whole tensor (``granularity="per_tensor"``, ONNX's DynamicQuantizeLinear itself) or over
each row, i.e. each token (``"per_token"``: the same formulas with min/max over the last axis;
exported as ReduceMin/ReduceMax and elementwise ops, since DynamicQuantizeLinear is per tensor
and ONNX Runtime's MatMulInteger accepts only a scalar activation zero point).
:class:`DynamicLinear` computes what the exported graph computes, DynamicQuantizeLinear →
MatMulInteger → Cast → Mul(s_x·s_w) → Add(bias) (per token: MatMulInteger without zero point,
``− z_row·colsum(W)`` in int32, Cast, Mul(s_row·s_w)): an exact integer accumulator, converted
to fp32 and multiplied by the fp32 product of the scales.  No calibration data is needed.

LSTM, GRU and RNN layers have no dynamic int8 form here: the exported graph would need ONNX
Runtime's com.microsoft DynamicQuantizeLSTM (no GRU counterpart), which neither the exporter
nor the runtime implements, and a float LSTM with dequantized weights is not dynamic
quantization.  :func:`quantize_dynamic` therefore refuses a model holding one, naming it,
unless the caller keeps it float on purpose by listing it in ``skip``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from quant.errors import QuantError
from quant.spec import WEIGHT_INT8_PER_CHANNEL, qparams, quantize_int
from quant.weight_only import is_linear_like, linear_weight, set_module


def dynamic_qparams(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale fp32, zero point) of ONNX DynamicQuantizeLinear over the whole tensor.

    A tensor of zeros gets scale 1 (ONNX Runtime's choice) instead of dividing by 0."""
    lo = torch.clamp(x.min().float(), max=0.0)
    hi = torch.clamp(x.max().float(), min=0.0)
    scale = (hi - lo) / torch.tensor(255.0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(torch.round((0.0 - lo) / scale), 0, 255)
    return scale, zero


def dynamic_qparams_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DynamicQuantizeLinear's (scale, zero point) per row (min/max over the last axis, kept as
    a size-1 axis); a row of zeros gets scale 1."""
    lo = torch.clamp(x.amin(-1, keepdim=True).float(), max=0.0)
    hi = torch.clamp(x.amax(-1, keepdim=True).float(), min=0.0)
    scale = (hi - lo) / torch.tensor(255.0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.clamp(torch.round((0.0 - lo) / scale), 0, 255)
    return scale, zero


GRANULARITIES = ("per_tensor", "per_token")


class DynamicLinear(nn.Module):
    """y = fp32(Σ (q_x - z_x)·q_w) · fp32(s_x · s_w[c]) + b with run-time uint8 q_x
    (s_x, z_x one pair per tensor, or per row with ``granularity="per_token"``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, granularity: str = "per_tensor") -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise QuantError(f"dynamic granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
        self.granularity = granularity
        w = weight.detach().float()
        amax = w.abs().amax(1)
        scale, _ = qparams(-amax, amax, WEIGHT_INT8_PER_CHANNEL)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.register_buffer("qweight", quantize_int(w, scale, torch.zeros_like(scale, dtype=torch.int32),
                                                     WEIGHT_INT8_PER_CHANNEL, axis=0).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the export's float twin carries (identifies this layer's MatMul)."""
        return self.qweight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.granularity == "per_token":
            scale, zero = dynamic_qparams_per_token(xf)
        else:
            scale, zero = dynamic_qparams(xf)
        q = torch.clamp(torch.round(xf / scale) + zero, 0, 255)
        acc = (q.double() - zero.double()) @ self.qweight.double().t()
        y = acc.float() * (scale * self.weight_scale).float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic "
                f"{self.granularity}")


RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)


def quantize_dynamic(model: nn.Module, *, skip: Iterable[str] = (), granularity: str = "per_tensor") -> nn.Module:
    """Replaces every Linear-like module (in place) by a :class:`DynamicLinear`; returns ``model``."""
    if granularity not in GRANULARITIES:
        raise QuantError(f"dynamic granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    modules = dict(model.named_modules())
    skip = set(skip)
    if unknown := sorted(skip - set(modules)):
        raise QuantError(f"skip names unknown modules {unknown}")
    names = [n for n, m in modules.items() if is_linear_like(m) and n not in skip]
    recurrent = [n for n, m in modules.items() if isinstance(m, RECURRENT) and n not in skip]
    if recurrent:
        kinds = sorted({type(modules[n]).__name__ for n in recurrent})
        raise QuantError(f"dynamic int8 has no integer form for {'/'.join(kinds)} layers {recurrent} (ONNX Runtime's "
                         "DynamicQuantizeLSTM is not implemented here); pass skip="
                         f"{recurrent} to keep them float and quantize the Linear layers")
    if not names:
        raise QuantError(f"{type(model).__name__} has no Linear layers to quantize dynamically")
    for name in names:
        module = modules[name]
        set_module(model, name, DynamicLinear(linear_weight(module), module.bias, granularity))
    return model

