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

``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` become :class:`quant.dynamic_rnn.DynamicLSTM` / ``DynamicGRU``
/ ``DynamicRNN`` (int8 W and R per gate row, X and each step's hidden state quantized at run
time, exact integer products, gate arithmetic in fp32).
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


def int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes, fp32 scale per row) of a 2-D weight, symmetric: scale = max|w_row| / 127."""
    w = weight.detach().float()
    amax = w.abs().amax(1)
    scale, _ = qparams(-amax, amax, WEIGHT_INT8_PER_CHANNEL)
    q = quantize_int(w, scale, torch.zeros_like(scale, dtype=torch.int32), WEIGHT_INT8_PER_CHANNEL, axis=0)
    return q.to(torch.int8), scale


def quantize_activation(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """DynamicQuantizeLinear's uint8 codes (as float) of fp32 ``x`` on (scale, zero)."""
    return torch.clamp(torch.round(x / scale) + zero, 0, 255)


def dynamic_product(x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """``fp32(Σ (q_x - z_x)·q_w) · fp32(s_x · s_w)`` with ``x`` quantized per tensor at run time:
    MatMulInteger's exact accumulator (formed in float64, exact below 2^53), then the exported
    Cast and Mul.  ``qweight`` is (out, in) int8."""
    xf = x.float()
    scale, zero = dynamic_qparams(xf)
    acc = (quantize_activation(xf, scale, zero).double() - zero.double()) @ qweight.double().t()
    return acc.float() * (scale * weight_scale).float()


class DynamicLinear(nn.Module):
    """y = fp32(Σ (q_x - z_x)·q_w) · fp32(s_x · s_w[c]) + b with run-time uint8 q_x
    (s_x, z_x one pair per tensor, or per row with ``granularity="per_token"``)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, granularity: str = "per_tensor") -> None:
        super().__init__()
        if granularity not in GRANULARITIES:
            raise QuantError(f"dynamic granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
        self.granularity = granularity
        qweight, scale = int8_per_channel(weight)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.register_buffer("qweight", qweight)
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the export's float twin carries (identifies this layer's MatMul)."""
        return self.qweight.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.granularity == "per_token":
            scale, zero = dynamic_qparams_per_token(xf)
            acc = (quantize_activation(xf, scale, zero).double() - zero.double()) @ self.qweight.double().t()
            y = acc.float() * (scale * self.weight_scale).float()
        else:
            y = dynamic_product(xf, self.qweight, self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic "
                f"{self.granularity}")


def quantize_dynamic(model: nn.Module, *, skip: Iterable[str] = (), granularity: str = "per_tensor") -> nn.Module:
    """Replaces every Linear-like module by a :class:`DynamicLinear` and every ``nn.LSTM`` /
    ``nn.GRU`` / ``nn.RNN`` by a :class:`quant.dynamic_rnn.DynamicLSTM` / ``DynamicGRU`` /
    ``DynamicRNN`` (in place); returns
    ``model``.  The recurrences quantize their activations per tensor whatever ``granularity``
    says (the form ORT's DynamicQuantizeLSTM computes)."""
    from quant.dynamic_rnn import dynamic_rnn_class

    if granularity not in GRANULARITIES:
        raise QuantError(f"dynamic granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    modules = dict(model.named_modules())
    skip = set(skip)
    if unknown := sorted(skip - set(modules)):
        raise QuantError(f"skip names unknown modules {unknown}")
    names = [n for n, m in modules.items() if is_linear_like(m) and n not in skip]
    recurrent = [n for n, m in modules.items() if dynamic_rnn_class(m) is not None and n not in skip]
    if not names and not recurrent:
        raise QuantError(f"{type(model).__name__} has no Linear, LSTM, GRU or RNN layers to quantize dynamically")
    for name in names:
        module = modules[name]
        set_module(model, name, DynamicLinear(linear_weight(module), module.bias, granularity))
    for name in recurrent:
        set_module(model, name, dynamic_rnn_class(modules[name])(modules[name]))
    return model
