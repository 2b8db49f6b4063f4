"""QuantizeLinear (opset 10-23): q = saturate(round_half_even(x / s) + z), per tensor, per
axis or per block.  The code types are the 8-, 16- and 32-bit integers; float8 and sub-byte
types are refused with the node named."""

from __future__ import annotations

import numpy as np
from onnx import helper

from runtime import kernels
from runtime.errors import InferenceError
from runtime.ops.registry import register
from runtime.qmath import QRANGE, quantize


def check_code_type(dtype: np.dtype, where: str) -> None:
    if np.dtype(dtype) not in QRANGE:
        raise InferenceError(f"{where}: quantized type {np.dtype(dtype).name} is not supported (8/16/32-bit integers)")


def expand_blocks(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int, block: int):
    """Per-block scale and zero point repeated ``block`` times along ``axis`` to x's shape."""
    a = axis % x.ndim
    s = np.repeat(scale, block, axis=a)[tuple(slice(0, n) for n in x.shape)]
    z = None if zero_point is None else np.repeat(zero_point, block, axis=a)[tuple(slice(0, n) for n in x.shape)]
    return s, z


@register("QuantizeLinear")
def quantize_linear(node, graph, opts):
    axis, block = node.attrs.get("axis", 1), node.attrs.get("block_size", 0)  # no axis before opset 13
    out_type = node.attrs.get("output_dtype", 0)
    where = f"{graph.source}: {node.describe()}"

    def run(x, scale, zero_point=None):
        if zero_point is not None:
            dtype = zero_point.dtype
        else:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(out_type)) if out_type else np.dtype(np.uint8)
        check_code_type(dtype, where)
        if not block and x.dtype == np.float32 and scale.size == 1 and dtype in (np.uint8, np.int8):
            # A model's input: one C pass, the same arithmetic as qmath.quantize.
            z = 0 if zero_point is None else int(zero_point.reshape(-1)[0])
            return [kernels.quantize_f32(x, scale.reshape(-1)[0], z, dtype, opts.isa)]
        if not block:
            return [quantize(x, scale, zero_point, axis, dtype)]
        s, z = expand_blocks(x, scale, zero_point, axis, block)
        lo, hi = QRANGE[np.dtype(dtype)]
        q = np.rint(x.astype(np.float32) / s.astype(np.float32)) + (0 if z is None else z.astype(np.float32))
        return [np.clip(q, lo, hi).astype(dtype)]

    return run
