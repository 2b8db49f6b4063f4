"""com.microsoft QLinearGlobalAveragePool and QLinearAveragePool, computed the way ONNX
Runtime does (so results match it exactly, and the QDQ reference to within one step).

Global pooling sums exact integers and requantizes once:
y = rne((sum - n*z_x) * fp32(s_x / (s_y * n))) + z_y.  Windowed pooling as ONNX Runtime's
contrib kernel: dequantize, sum in fp32 in window order, divide by the count, then
rne(fp32(y / s_y) + z_y) (the zero point is added before rounding, unlike QuantizeLinear)."""

from __future__ import annotations

import numpy as np

from runtime.graph import MS_DOMAIN
from runtime.ops.pool import average_pool_sum
from runtime.ops.qlinear_matmul import _require_const
from runtime.ops.registry import register
from runtime.qmath import QRANGE, dequantize


def _requantize(acc: np.ndarray, scale: np.ndarray, zy: int, dtype) -> np.ndarray:
    lo, hi = QRANGE[np.dtype(dtype)]
    return np.clip(np.rint(acc.astype(np.float32) * scale) + zy, lo, hi).astype(dtype)


@register("QLinearGlobalAveragePool", domain=MS_DOMAIN)
def qlinear_global_average_pool(node, graph, opts):
    sx, zx, sy, zy = _require_const(node, graph, [1, 2, 3, 4], "quantization parameter")
    axes = (1, 2) if node.attrs.get("channels_last", 0) else (2, 3)

    def run(x, *_):
        n = x.shape[axes[0]] * x.shape[axes[1]]
        # The pixels on one axis (a view) and int32 sums while n * 255 fits: a reduction over one
        # axis at the narrowest exact width is several times faster than over two in int64.
        keep = list(x.shape)
        keep[axes[0]] = keep[axes[1]] = 1
        flat = x.reshape(x.shape[0], n, -1) if axes == (1, 2) else x.reshape(x.shape[0], x.shape[1], n)
        acc = flat.sum(axis=1 if axes == (1, 2) else 2, dtype=np.int32 if n < 2**23 else np.int64).reshape(keep)
        acc = acc - n * int(zx)
        scale = np.float32(sx) / (np.float32(sy) * np.float32(n))
        return [_requantize(acc, scale, int(zy), zy.dtype)]

    return run


@register("QLinearAveragePool", domain=MS_DOMAIN)
def qlinear_average_pool(node, graph, opts):
    sx, zx, sy, zy = _require_const(node, graph, [1, 2, 3, 4], "quantization parameter")
    where = f"{graph.source}: {node.describe()}"

    def run(x, *_):
        total, count = average_pool_sum(dequantize(x, sx, zx), node, where)
        # ONNX Runtime rounds y / s_y + z_y (zero point added before rounding: differs on odd-z ties)
        y = (total / count).astype(np.float32) / np.float32(sy) + np.float32(zy)
        lo, hi = QRANGE[zy.dtype]
        return [np.clip(np.rint(y), lo, hi).astype(zy.dtype)]

    return run
