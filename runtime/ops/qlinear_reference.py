"""Exact numpy integer convolution and matrix product for what the C kernels do not take:
run-time (non-constant) scales or zero points, weights whose distance from their zero point
leaves int8 (uint8 weights with zero point 255, as ONNX's own QLinearConv case has), 1-D and
3-D convolutions.

Accumulation is exact in int64; requantization is the runtime's one output stage
(DESIGN.md §3): y = saturate(round_half_even(acc * fp32(fp32(s_x * s_w[c]) / s_y)) + z_y)."""

from __future__ import annotations

import numpy as np

from runtime.graph import Graph, Node
from runtime.ops.conv_nd import conv_nd
from runtime.qmath import QRANGE


def _centered(q: np.ndarray, zero_point, axis: int) -> np.ndarray:
    """q - z as int64, z per tensor or per ``axis``."""
    z = np.asarray(0 if zero_point is None else zero_point, np.int64)
    if z.size > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = z.size
        z = z.reshape(shape)
    return q.astype(np.int64) - z.reshape(z.shape if z.size > 1 else ())


def fits_c_kernels(graph: Graph, node: Node, constant: list[int], weight: int, weight_zp: int, rank: int = 2) -> bool:
    """True when the inputs at ``constant`` are constants, the weight has ``rank`` dims and
    weight minus its zero point is an int8 operand: the C kernels' contract."""
    inputs = node.inputs + [""] * 9
    if any(inputs[i] and graph.const(inputs[i]) is None for i in constant):
        return False
    w = graph.const(inputs[weight])
    if w is None or w.ndim != rank:
        return False
    z = graph.const(inputs[weight_zp]) if inputs[weight_zp] else None
    centered = _centered(w, z, 0 if w.ndim == 4 else 1)
    return centered.size == 0 or (centered.min() >= -128 and centered.max() <= 127)


def requantize(acc: np.ndarray, x_scale, w_scale, y_scale, y_zero_point, channel_axis: int) -> np.ndarray:
    """The output stage on int64 accumulators, per-channel scales along ``channel_axis``."""
    ws = np.asarray(w_scale, np.float32).reshape(-1)
    mult = (np.float32(np.asarray(x_scale, np.float32).reshape(())) * ws).astype(np.float32)
    mult = (mult / np.float32(np.asarray(y_scale, np.float32).reshape(()))).astype(np.float32)
    if mult.size > 1:
        shape = [1] * acc.ndim
        shape[channel_axis % acc.ndim] = mult.size
        mult = mult.reshape(shape)
    dtype = np.asarray(y_zero_point).dtype if y_zero_point is not None else np.dtype(np.uint8)
    lo, hi = QRANGE[dtype]
    zy = 0 if y_zero_point is None else int(np.asarray(y_zero_point).reshape(-1)[0])
    y = np.rint(acc.astype(np.float32) * mult) + zy
    return np.clip(y, lo, hi).astype(dtype)


def conv_integer(x: np.ndarray, x_zp, w: np.ndarray, w_zp, attrs: dict, where: str) -> np.ndarray:
    """int64 sum of (x - z_x)(w - z_w) over each window, zero-point padding (ConvInteger)."""
    return conv_nd(_centered(x, x_zp, 1), _centered(w, w_zp, 0), None, attrs, where)


def _channels_first(node: Node, fn):
    """fn on NCHW data, for a node the layout pass set to NHWC (``channels_last``)."""
    if not node.attrs.get("channels_last", 0):
        return fn
    return lambda x, *rest: [y.transpose(0, 2, 3, 1) for y in fn(x.transpose(0, 3, 1, 2), *rest)]


def qlinear_conv(node: Node, graph: Graph, opts):
    """QLinearConv factory on the exact numpy path."""
    where = f"{graph.source}: {node.describe()}"

    def run(x, xs, xz, w, ws, wz, ys, yz, bias=None):
        acc = conv_integer(x, xz, w, wz, node.attrs, where)
        if bias is not None:
            acc = acc + bias.astype(np.int64).reshape(1, -1, *([1] * (acc.ndim - 2)))
        return [requantize(acc, xs, ws, ys, yz, 1)]

    return _channels_first(node, run)


def conv_integer_op(node: Node, graph: Graph, opts):
    """ConvInteger factory on the exact numpy path (int32 output)."""
    where = f"{graph.source}: {node.describe()}"

    def run(x, w, xz=None, wz=None):
        return [conv_integer(x, xz, w, wz, node.attrs, where).astype(np.int32)]

    return _channels_first(node, run)


def qlinear_matmul(node: Node, graph: Graph, opts):
    """QLinearMatMul factory on the exact numpy path (per-column b scales along the last axis)."""

    def run(a, a_s, az, b, bs, bz, ys, yz):
        acc = np.matmul(_centered(a, az, -1), _centered(b, bz, -1))
        return [requantize(acc, a_s, bs, ys, yz, -1)]

    return run
