"""DequantizeLinear (opset 10-23): x = (q - z) * s, per tensor, per axis or per block; the
output takes the scale's float type."""

from __future__ import annotations

import numpy as np

from runtime.ops.quantize_linear import check_code_type, expand_blocks
from runtime.ops.registry import register
from runtime.qmath import dequantize


@register("DequantizeLinear")
def dequantize_linear(node, graph, opts):
    axis, block = node.attrs.get("axis", 1), node.attrs.get("block_size", 0)  # no axis before opset 13
    where = f"{graph.source}: {node.describe()}"

    def run(q, scale, zero_point=None):
        check_code_type(q.dtype, where)
        if block:
            s, z = expand_blocks(q, scale, zero_point, axis, block)
            y = (q.astype(np.int64) - (0 if z is None else z.astype(np.int64))) * s.astype(np.float32)
        else:
            y = dequantize(q, scale, zero_point, axis)
        return [y.astype(scale.dtype, copy=False)]

    return run
