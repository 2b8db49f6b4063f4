"""com.microsoft QLinearSoftmax (ORT's QOperator form of Softmax in transformer files):
y = Q(softmax(DQ(x))) in float32 along ``axis``; ``opset`` < 13 flattens the trailing dims
from ``axis`` on, as Softmax did before opset 13."""

from __future__ import annotations

import numpy as np

from runtime.graph import MS_DOMAIN
from runtime.ops.qlinear_matmul import _require_const
from runtime.ops.registry import register
from runtime.qmath import dequantize, quantize


@register("QLinearSoftmax", domain=MS_DOMAIN, grid="integer", defaults={"axis": -1, "opset": 13})
def qlinear_softmax(node, graph, opts):
    sx, zx, sy, zy = _require_const(node, graph, [1, 2, 3, 4], "quantization parameter")
    axis, flatten = node.attrs["axis"], node.attrs["opset"] < 13

    def run(x, *_):
        v = dequantize(x, sx, zx)
        a = axis
        if flatten:
            a = axis % x.ndim
            v = v.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1)
            a = 1
        e = np.exp(v - v.max(axis=a, keepdims=True))
        y = (e / e.sum(axis=a, keepdims=True)).astype(np.float32).reshape(x.shape)
        return [quantize(y, sy, zy)]

    return run
