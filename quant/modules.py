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
from quant.spec import ACT_UINT8, INT32_MAX, INT32_MIN, QuantSpec, bias_scale, fake_quantize_bias

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
        self.output_spec = ACT_UINT8  # the output quantizer's; preparation sets it
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

    def _exact(self, input_scale: torch.Tensor | None) -> bool:
        return not self.training and input_scale is not None and bool(self.weight_quant.quant_enabled)

    def _integer_forward(
        self, op, x: torch.Tensor, input_scale: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None,
        channel_dims: int,
    ) -> torch.Tensor:
        """The int8 graph's arithmetic, element for element (DESIGN.md §3).

        Summing dequantized products in fp32 rounds differently from an int32
        accumulator, and one flipped rounding deep in a network is amplified layer after
        layer (measured: resnet18 outputs up to 7 steps from ONNX Runtime). In eval the
        codes are recovered exactly (x̂/s is an integer to within 2⁻²⁴) and accumulated
        in float64, exact for any realistic K. With the output grid ``out`` = (s_y, z_y)
        known, the result is requantized as the kernels do it:
        ``q = clamp(round(fp32(acc) · fp32(fp32(s_x·s_w[c]) / s_y)) + z_y)``, the fused
        ReLU/ReLU6 being the clamp bounds; otherwise ``acc·(s_x·s_w[c])`` is returned.
        """
        s_w = self.weight_quant.scale
        w_shape = (-1,) + (1,) * (self.weight.dim() - 1)
        codes_x = torch.round(x.double() / input_scale.double())
        codes_w = torch.round(self.quantized_weight().double() / s_w.double().reshape(w_shape))
        step = bias_scale(input_scale, s_w)  # float32, as exported
        bias = self.effective_bias()
        codes_b = None
        if bias is not None:
            # divided in fp32, as fake_quantize_bias and the exporter do
            codes_b = torch.clamp(torch.round(bias.float() / step), INT32_MIN, INT32_MAX).double()
        acc = op(codes_x, codes_w, codes_b)
        c_shape = (-1,) + (1,) * channel_dims if step.dim() else ()
        if out is None:
            return _apply_act((acc * step.double().reshape(c_shape)).to(x.dtype), self.act)
        s_y, z_y = out[0].float(), out[1].float()
        multiplier = (step / s_y).reshape(c_shape)
        lo, hi = _act_bounds(self.output_spec, self.act, s_y, z_y)
        q = torch.clamp(torch.round(acc.float() * multiplier) + z_y, lo, hi)
        return ((q - z_y) * s_y).to(x.dtype)


def _act_bounds(spec: QuantSpec, act: str | None, s_y: torch.Tensor, z_y: torch.Tensor) -> tuple[float, float]:
    """Integer saturation bounds: the output type's range narrowed by ReLU / ReLU6.

    Quantization is monotone, so Q(clip(v, a, b)) = clamp(Q(v), Q(a), Q(b)).
    """
    lo, hi = float(spec.qmin), float(spec.qmax)
    if act in ACTIVATIONS:
        lo = max(lo, float(z_y))
    if act == "relu6":
        hi = min(hi, float(torch.round(s_y.new_tensor(6.0) / s_y) + z_y))
    return lo, hi


class _QuantBinary(nn.Module):
    """Shared shape of QuantAdd / QuantMatMul: both inputs and the output on known grids.

    Training and calibration: the float op (gradients, statistics). Eval with the output
    quantizer enabled: the int8 kernel's arithmetic on the codes (``_integer``).
    """

    def __init__(self, spec: QuantSpec) -> None:
        super().__init__()
        self.spec = spec

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, s_a: torch.Tensor, z_a: torch.Tensor, s_b: torch.Tensor,
        z_b: torch.Tensor, s_y: torch.Tensor | None = None, z_y: torch.Tensor | None = None,
        enabled: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.training or s_y is None or z_y is None or enabled is None or not bool(enabled):
            return self._float(a, b)
        qa = torch.round(a.double() / s_a.double()) + float(z_a)
        qb = torch.round(b.double() / s_b.double()) + float(z_b)
        q = torch.clamp(self._integer(qa, qb, s_a, z_a, s_b, z_b, s_y, z_y), self.spec.qmin, self.spec.qmax)
        return ((q - float(z_y)) * s_y.float()).to(a.dtype)

    def _float(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _integer(self, qa, qb, s_a, z_a, s_b, z_b, s_y, z_y) -> torch.Tensor:
        raise NotImplementedError


class QuantMatMul(_QuantBinary):
    """Activation × activation matmul (attention): QLinearMatMul's arithmetic in eval.

    ``acc = (q_a − z_a) @ (q_b − z_b)`` exactly (float64), then
    ``round(fp32(acc) · fp32(fp32(s_a·s_b) / s_y)) + z_y`` as for convolutions.
    """

    def _float(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)

    def _integer(self, qa, qb, s_a, z_a, s_b, z_b, s_y, z_y) -> torch.Tensor:
        acc = torch.matmul(qa - float(z_a), qb - float(z_b))
        multiplier = (s_a.float() * s_b.float()) / s_y.float()
        return torch.round(acc.float() * multiplier) + float(z_y)


class QuantAdd(_QuantBinary):
    """Residual add of two quantized tensors: ONNX Runtime's QLinearAdd arithmetic in eval.

    The bundled runtime follows it too: ``q = round(fma(a, s_a/s_y, fma(b, s_b/s_y,
    z_y − fma(s_a/s_y, z_a, s_b/s_y·z_b))))`` on the codes, in fp32 with fused
    multiply-adds (emulated exactly in float64). Algebraically Q(DQ(a) + DQ(b)); the
    pre-divided ratios round differently on rare ties, and those one-step flips
    compound through deep residual networks unless the simulation makes the same ones.
    """

    def _float(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def _integer(self, qa, qb, s_a, z_a, s_b, z_b, s_y, z_y) -> torch.Tensor:
        f32 = torch.float32
        ra, rb = (s_a.to(f32) / s_y.to(f32)).double(), (s_b.to(f32) / s_y.to(f32)).double()
        fused = (ra * float(z_a) + (rb * float(z_b)).to(f32).double()).to(f32)
        offset = (s_y.new_tensor(float(z_y), dtype=f32) - fused).double()
        inner = (qb * rb + offset).to(f32).double()
        return torch.round((qa * ra + inner).to(f32)).double()


class QuantAvgPool2d(nn.Module):
    """2-D average pooling of a quantized tensor, back onto its own grid (``F.avg_pool2d``).

    Training and calibration: ``F.avg_pool2d``. Eval with the grid's quantizer enabled:
    the arithmetic of ONNX Runtime's QLinearAveragePool (what DQ → AveragePool → Q becomes
    there and in the bundled runtime): ``x̂ = fp32(s·(q − z))`` summed in fp32 in window
    order (rows, then columns; padding adds nothing), divided by the element count (the
    whole kernel with ``count_include_pad``), then ``round_half_even(fp32(y / s) + z)`` —
    the zero point added before rounding. A 2×2 window lands on exact ties (k + ½ steps)
    for about a quarter of its outputs, where these details decide the code.
    """

    def __init__(self, kernel_size, stride, padding, ceil_mode: bool, count_include_pad: bool,
                 spec: QuantSpec) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride or kernel_size)
        self.padding = _pair(padding)
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self.spec = spec

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, enabled: torch.Tensor
    ) -> torch.Tensor:
        float_pool = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                  self.count_include_pad)
        if self.training or not bool(enabled):
            return float_pool
        s, z = scale.float(), float(zero_point)
        xhat = torch.round(x.float() / s) * s  # the codes (exact) times the scale, as DequantizeLinear
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        oh, ow = float_pool.shape[-2:]
        extra_h = max(0, (oh - 1) * sh + kh - x.shape[-2] - 2 * ph)  # ceil_mode's partial windows
        extra_w = max(0, (ow - 1) * sw + kw - x.shape[-1] - 2 * pw)
        padded = F.pad(xhat, (pw, pw + extra_w, ph, ph + extra_h))
        inside = F.pad(torch.ones_like(x[:1, :1]), (pw, pw + extra_w, ph, ph + extra_h))
        total, count = None, None
        for i in range(kh):
            for j in range(kw):
                window = (..., slice(i, i + (oh - 1) * sh + 1, sh), slice(j, j + (ow - 1) * sw + 1, sw))
                total = padded[window].clone() if total is None else total + padded[window]
                count = inside[window].clone() if count is None else count + inside[window]
        if self.count_include_pad:
            count = torch.full_like(count, float(kh * kw))
        q = torch.clamp(torch.round(total / count / s + z), self.spec.qmin, self.spec.qmax)
        return ((q - z) * s).to(x.dtype)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


class QuantGlobalMean(nn.Module):
    """Mean of a quantized tensor over ``dims``, back onto its own grid (global average pooling).

    Training and calibration: ``x.mean``. Eval with the grid's quantizer enabled: the
    arithmetic of QLinearGlobalAveragePool (ONNX Runtime and the bundled runtime):
    ``round(fp32(Σ(q − z)) · fp32(s / (s·n))) + z`` on an exact integer sum. A float mean
    of dequantized values lands on exact ties (k + ½ steps) for a sizeable fraction of
    outputs, where summation order decides the rounding.
    """

    def __init__(self, dims: tuple[int, ...], keepdim: bool, spec: QuantSpec) -> None:
        super().__init__()
        self.dims = dims
        self.keepdim = keepdim
        self.spec = spec

    def forward(
        self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, enabled: torch.Tensor
    ) -> torch.Tensor:
        if self.training or not bool(enabled):
            return x.mean(self.dims, keepdim=self.keepdim)
        s, z = scale.float(), float(zero_point)
        acc = torch.round(x.double() / s.double()).sum(self.dims, keepdim=self.keepdim)
        n = 1
        for d in self.dims:
            n *= x.shape[d]
        multiplier = s / (s * float(n))  # fp32(s_y·n): n is an exact fp32 integer
        q = torch.clamp(torch.round(acc.float() * multiplier) + z, self.spec.qmin, self.spec.qmax)
        return ((q - z) * s).to(x.dtype)


class QuantConv2d(QuantWeighted):
    """Conv2d (BN already folded) + optional ReLU/ReLU6, int8 weights, int32 bias."""

    def __init__(self, conv: nn.Conv2d | nn.Conv1d, weight_spec: QuantSpec, act: str | None = None,
                 name: str = "") -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise QuantError(f"'{name}': padding_mode={conv.padding_mode!r} has no int8 equivalent")
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self._init_quant(weight_spec, act, name)

    def forward(
        self, x: torch.Tensor, input_scale: torch.Tensor | None = None, output_scale: torch.Tensor | None = None,
        output_zero_point: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def conv(inp, w, b):
            return F.conv2d(inp, w, b, self.stride, self.padding, self.dilation, self.groups)

        if self._exact(input_scale):
            out = None if output_scale is None else (output_scale, output_zero_point)
            return self._integer_forward(conv, x, input_scale, out, channel_dims=2)
        return _apply_act(conv(x, self.quantized_weight(), self.quantized_bias(input_scale)), self.act)


class QuantConv1d(QuantConv2d):
    """Conv1d (BN already folded) + optional ReLU/ReLU6: QLinearConv with a 1-D kernel."""

    def forward(
        self, x: torch.Tensor, input_scale: torch.Tensor | None = None, output_scale: torch.Tensor | None = None,
        output_zero_point: torch.Tensor | None = None,
    ) -> torch.Tensor:
        def conv(inp, w, b):
            return F.conv1d(inp, w, b, self.stride, self.padding, self.dilation, self.groups)

        if self._exact(input_scale):
            out = None if output_scale is None else (output_scale, output_zero_point)
            return self._integer_forward(conv, x, input_scale, out, channel_dims=1)
        return _apply_act(conv(x, self.quantized_weight(), self.quantized_bias(input_scale)), self.act)


class QuantLinear(QuantWeighted):
    """Linear + optional ReLU/ReLU6, int8 weights, int32 bias."""

    def __init__(self, linear: nn.Linear, weight_spec: QuantSpec, act: str | None = None, name: str = "") -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone()) if linear.bias is not None else None
        self._init_quant(weight_spec, act, name)

    def forward(
        self, x: torch.Tensor, input_scale: torch.Tensor | None = None, output_scale: torch.Tensor | None = None,
        output_zero_point: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self._exact(input_scale):
            out = None if output_scale is None else (output_scale, output_zero_point)
            return self._integer_forward(F.linear, x, input_scale, out, channel_dims=0)
        return _apply_act(F.linear(x, self.quantized_weight(), self.quantized_bias(input_scale)), self.act)
