"""Three torch custom ops that carry the quantized patterns through torch.onnx's exporter.

The float parts of a model are written by torch.onnx's dynamo exporter (a maintained
ATen → ONNX table); the quantized parts must land in the file exactly as the
simulation computes them, so they travel as opaque custom ops with our own ONNX
translations (onnxscript):

- ``compress::qdq(x, scale, zero_point)`` → QuantizeLinear → DequantizeLinear
  (the zero point's dtype, uint8 or int8, is the container type);
- ``compress::dequantize(codes, scale, zero_point, axis)`` → DequantizeLinear of stored
  integer codes (int8 weights per channel, int32 biases);
- ``compress::global_average_pool(x)`` → GlobalAveragePool, which ONNX Runtime and the
  bundled runtime fold into the integer QLinearGlobalAveragePool between DQ and Q
  (the exporter's own translation of a mean is ReduceMean, which stays float and
  rounds differently from the simulation).

Their torch implementations are the same arithmetic (used only while tracing).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_LIB = "compress"


@torch.library.custom_op(f"{_LIB}::qdq", mutates_args=())
def qdq(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    info = torch.iinfo(zero_point.dtype)
    z = zero_point.to(x.dtype)
    q = torch.clamp(torch.round(x / scale) + z, info.min, info.max)
    return (q - z) * scale


@qdq.register_fake
def _(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op(f"{_LIB}::dequantize", mutates_args=())
def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * codes.dim()
    if scale.dim():
        shape[axis] = -1
    return (codes.double() - zero_point.double().reshape(shape or [])).mul(scale.double().reshape(shape)).float()


@dequantize.register_fake
def _(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.empty(codes.shape, dtype=torch.float32, device=codes.device)


@torch.library.custom_op(f"{_LIB}::global_average_pool", mutates_args=())
def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(tuple(range(2, x.dim())), keepdim=True)


@global_average_pool.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:2], *([1] * (x.dim() - 2))))


def translations(opset: int) -> dict[Callable, Callable]:
    """The onnxscript functions torch.onnx uses for the three ops (``custom_translation_table``)."""
    import onnxscript

    op = getattr(onnxscript, f"opset{opset}")

    def onnx_qdq(x, scale, zero_point):
        return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero_point), scale, zero_point)

    def onnx_dequantize(codes, scale, zero_point, axis: int):
        return op.DequantizeLinear(codes, scale, zero_point, axis=axis)

    def onnx_global_average_pool(x):
        return op.GlobalAveragePool(x)

    return {
        torch.ops.compress.qdq.default: onnx_qdq,
        torch.ops.compress.dequantize.default: onnx_dequantize,
        torch.ops.compress.global_average_pool.default: onnx_global_average_pool,
    }
