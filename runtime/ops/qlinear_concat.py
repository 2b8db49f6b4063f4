"""com.microsoft QLinearConcat: inputs that already share the output's scale and zero point
are copied as they are (exact), the others requantized through fp32."""

from __future__ import annotations

import numpy as np

from runtime.errors import InferenceError
from runtime.graph import MS_DOMAIN
from runtime.ops.registry import register
from runtime.qmath import dequantize, quantize


@register("QLinearConcat", domain=MS_DOMAIN)
def qlinear_concat(node, graph, opts):
    axis = node.attrs["axis"]
    if node.attrs.get("channels_last", 0):
        axis = 3
    params = [graph.const(n) for n in node.inputs[:2]] + [
        graph.const(n) for i, n in enumerate(node.inputs[2:]) if i % 3
    ]
    if any(p is None for p in params):
        raise InferenceError(f"{graph.source}: {node.describe()} needs constant scales and zero points")
    sy, zy = params[0], params[1]
    triples = [
        (graph.const(node.inputs[i + 1]), graph.const(node.inputs[i + 2]))
        for i in range(2, len(node.inputs), 3)
    ]
    same = [float(s) == float(sy) and int(z) == int(zy) for s, z in triples]

    def run(_sy, _zy, *xs):
        parts = [
            x if keep else quantize(dequantize(x, s, z), sy, zy)
            for x, keep, (s, z) in zip(xs[0::3], same, triples, strict=True)
        ]
        return [np.concatenate(parts, axis=axis)]

    return run
