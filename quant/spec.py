"""Quantization specs and the affine arithmetic of DESIGN.md §3.

``q = saturate(round_half_to_even(x / s) + z)``, ``x̂ = (q − z)·s``, exactly as ONNX
QuantizeLinear/DequantizeLinear define it: divide by the scale (never multiply by
1/s, which rounds ties differently), float32 scales, integer zero points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quant.errors import QuantError


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    ``narrow`` drops the most negative code (int8 → [-127, 127]) so that symmetric
    weights are sign-symmetric and u8×s8 pair sums fit what SIMD kernels expect.
    """

    bits: int = 8
    signed: bool = False
    symmetric: bool = False
    per_channel: bool = False
    axis: int = 0
    narrow: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise QuantError(f"QuantSpec.bits must be in 2..8 (stored in 8-bit containers), got {self.bits}")

    @property
    def qmin(self) -> int:
        if self.signed:
            return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)
        return 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def onnx_dtype(self) -> str:
        """The ONNX container type: values of fewer bits live in int8/uint8."""
        return "int8" if self.signed else "uint8"


ACT_UINT8 = QuantSpec(bits=8, signed=False, symmetric=False)
ACT_INT8 = QuantSpec(bits=8, signed=True, symmetric=True)
WEIGHT_INT8_PER_CHANNEL = QuantSpec(bits=8, signed=True, symmetric=True, per_channel=True, narrow=True)
WEIGHT_INT8_PER_TENSOR = QuantSpec(bits=8, signed=True, symmetric=True, per_channel=False, narrow=True)

# Scale given to a tensor (or weight channel) whose range is zero: any finite positive
# value quantizes it exactly to the zero point.
ZERO_RANGE_SCALE = 1.0


def qparams(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) covering [lo, hi] (widened to include 0).

    Zero-range entries get ``ZERO_RANGE_SCALE``; callers that must reject them check
    ``hi > lo`` themselves, where they know the layer's name.
    """
    lo = torch.minimum(lo.detach().float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.detach().float(), torch.zeros_like(hi, dtype=torch.float32))
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        amax = torch.maximum(-lo, hi)
        half = (qmax - qmin) // 2  # 127 for int8 (full or narrow), 7 for narrow int4
        scale = amax / half
        zp = torch.full_like(scale, 0 if spec.signed else (qmin + qmax + 1) // 2, dtype=torch.int32)
    else:
        scale = (hi - lo) / (qmax - qmin)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.clamp(qmin - torch.round(lo / safe), qmin, qmax).to(torch.int32)
    zero = ~(scale > 0) | ~torch.isfinite(scale)
    scale = torch.where(zero, torch.full_like(scale, ZERO_RANGE_SCALE), scale)
    if not spec.symmetric:
        zp = torch.where(zero, torch.full_like(zp, qmin if not spec.signed else 0), zp)
    return scale.to(torch.float32), zp


def _broadcast(t: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


class _FakeQuantSTE(torch.autograd.Function):
    """Quantize-dequantize; gradient passes straight through inside the clip range."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin: int, qmax: int):  # type: ignore[override]
        q = torch.round(x / scale) + zp
        ctx.save_for_backward((q >= qmin) & (q <= qmax))
        return (torch.clamp(q, qmin, qmax) - zp) * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec, axis: int | None = None
) -> torch.Tensor:
    """Simulate int quantization of ``x`` in float (per-tensor, or per channel along ``axis``)."""
    s = _broadcast(scale.to(x.dtype), x, axis)
    z = _broadcast(zero_point.to(x.dtype), x, axis)
    return _FakeQuantSTE.apply(x, s, z, spec.qmin, spec.qmax)


def quantize_int(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec, axis: int | None = None
) -> torch.Tensor:
    """The integer codes themselves (int32 tensor), for export and for tests."""
    s = _broadcast(scale.float(), x, axis)
    z = _broadcast(zero_point.float(), x, axis)
    return torch.clamp(torch.round(x.float() / s) + z, spec.qmin, spec.qmax).to(torch.int32)


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class _BiasQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, b, scale):  # type: ignore[override]
        return torch.clamp(torch.round(b / scale), INT32_MIN, INT32_MAX) * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad, None


def bias_scale(input_scale: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """int32 bias scale ``s_in·s_w[c]`` computed in float32, as the exporter writes it."""
    return (input_scale.float() * weight_scale.float()).to(torch.float32)


def fake_quantize_bias(b: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """Bias as the int8 graph sees it: int32 codes at scale s_in·s_w[c], zero point 0."""
    return _BiasQuantSTE.apply(b, bias_scale(input_scale, weight_scale).to(b.dtype))
