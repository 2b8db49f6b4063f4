"""com.microsoft QLinearSigmoid / QLinearLeakyRelu as 256-entry lookup tables built at load:
y = Q(f(DQ(x))) for every possible input byte, so the result is the exact QDQ reference."""

from __future__ import annotations

import numpy as np

from runtime.graph import MS_DOMAIN
from runtime.ops.qlinear_matmul import _require_const
from runtime.ops.registry import register
from runtime.qmath import dequantize, quantize


def _table(fn_of_node):
    def factory(node, graph, opts):
        sx, zx, sy, zy = _require_const(node, graph, [1, 2, 3, 4], "quantization parameter")
        dtype = np.asarray(zx).dtype
        domain = np.arange(256, dtype=np.uint8).view(dtype)
        table = quantize(fn_of_node(node)(dequantize(domain, sx, zx)), sy, zy)
        return lambda x, *_: [table[x.view(np.uint8)]]

    return factory


register("QLinearSigmoid", domain=MS_DOMAIN)(_table(lambda node: lambda v: 1.0 / (1.0 + np.exp(-v))))
register("QLinearLeakyRelu", domain=MS_DOMAIN)(
    _table(lambda node: lambda v: np.where(v >= 0, v, v * np.float32(node.attrs.get("alpha", 0.01))))
)
