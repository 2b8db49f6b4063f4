"""DequantizeLinear (opset 10-21): x = (q - z) * s."""

from runtime.ops.registry import register
from runtime.qmath import dequantize


@register("DequantizeLinear")
def dequantize_linear(node, graph, opts):
    axis = node.attrs.get("axis", 1)
    return lambda q, scale, zero_point=None: [dequantize(q, scale, zero_point, axis)]
