"""QuantizeLinear (opset 10-21): q = saturate(round_half_even(x / s) + z)."""

import numpy as np

from runtime.ops.registry import register
from runtime.qmath import quantize


@register("QuantizeLinear")
def quantize_linear(node, graph, opts):
    axis = node.attrs.get("axis", 1)

    def run(x, scale, zero_point=None):
        dtype = zero_point.dtype if zero_point is not None else np.uint8
        return [quantize(x, scale, zero_point, axis, dtype)]

    return run
