"""Quantized compute modules: Conv2d / Linear with fused activation and int32 bias.

Their input arrives already fake-quantized by the activation quantizer on the edge;
the graph passes that quantizer's scale as the second argument so the bias can be
quantized exactly as the int8 graph stores it (int32 at s_in·s_w[c]). The output is
float (the int32 accumulator, rescaled); the next quantizer on the edge requantizes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quant.errors import QuantError
from quant.fake_quant import WeightFakeQuantize
from quant.spec import QuantSpec, fake_quantize_bias

ACTIVATIONS = ("relu", "relu6")


def _apply_act(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.hardtanh(y, 0.0, 6.0)
    return y


class QuantWeighted(nn.Module):
    """Shared parts: float weight/bias, the weight quantizer and the fused activation."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_quant(self, weight_spec: QuantSpec, act: str | None, name: str) -> None:
        self.act = act
        self.weight_quant = WeightFakeQuantize(weight_spec, name=f"{name}.weight")

    def effective_weight(self) -> torch.Tensor:
        """The float weight the int8 graph quantizes (BN folded); exporters read this."""
        return self.weight

    def effective_bias(self) -> torch.Tensor | None:
        """The float bias before int32 quantization (BN folded); exporters read this."""
        return self.bias

    def train(self, mode: bool = True) -> QuantWeighted:
        """Entering eval re-measures a still-observed weight (QAT): after the last optimizer
        step the weight scale would otherwise lag one step behind the weight, and exporters
        read both without running a forward."""
        super().train(mode)
        if not mode and self.weight_quant.observe_enabled and self.weight_quant.quant_enabled:
            self.refresh_weight_qparams()
        return self

    @torch.no_grad()
    def refresh_weight_qparams(self) -> None:
        """Measure the current weight once more (after training or calibration)."""
        self.weight_quant.observe_fresh(self.effective_weight())

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quant(self.effective_weight())

    def quantized_bias(self, input_scale: torch.Tensor | None) -> torch.Tensor | None:
        bias = self.effective_bias()
        if bias is None or input_scale is None or not self.weight_quant.quant_enabled:
            return bias
        return fake_quantize_bias(bias, input_scale, self.weight_quant.scale)


class QuantConv2d(QuantWeighted):
    """Conv2d (BN already folded) + optional ReLU/ReLU6, int8 weights, int32 bias."""

    def __init__(self, conv: nn.Conv2d, weight_spec: QuantSpec, act: str | None = None, name: str = "") -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise QuantError(f"'{name}': padding_mode={conv.padding_mode!r} has no int8 equivalent")
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._init_quant(weight_spec, act, name)

    def forward(self, x: torch.Tensor, input_scale: torch.Tensor | None = None) -> torch.Tensor:
        y = F.conv2d(
            x, self.quantized_weight(), self.quantized_bias(input_scale), self.stride, self.padding,
            self.dilation, self.groups,
        )
        return _apply_act(y, self.act)


class QuantLinear(QuantWeighted):
    """Linear + optional ReLU/ReLU6, int8 weights, int32 bias."""

    def __init__(self, linear: nn.Linear, weight_spec: QuantSpec, act: str | None = None, name: str = "") -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None
        self._init_quant(weight_spec, act, name)

    def forward(self, x: torch.Tensor, input_scale: torch.Tensor | None = None) -> torch.Tensor:
        return _apply_act(F.linear(x, self.quantized_weight(), self.quantized_bias(input_scale)), self.act)
