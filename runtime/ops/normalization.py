"""Softmax family and normalizations in numpy.

Softmax, LogSoftmax and LayerNormalization work in float64 and round once to the input's dtype:
the arithmetic the simulation uses for the same ops (quant/float_ops.py, DESIGN.md "Float ops
between quantizers"), which no engine's float32 summation order or exp approximation can
reproduce bit for bit otherwise. The other normalizations keep the specification's precision."""

from __future__ import annotations

import numpy as np

from runtime.ops.registry import register


def _softmax_axes(node, graph, x: np.ndarray) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """(array, axis) to reduce over: opset < 13 flattens the dims from ``axis`` on into one."""
    axis = node.attrs["axis"]
    if graph.opsets.get("", 13) < 13:
        a = axis % x.ndim if x.ndim else 0
        return x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1), 1, x.shape
    return x, axis, x.shape


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@register("Softmax")
def softmax(node, graph, opts):
    def run(x):
        v, axis, shape = _softmax_axes(node, graph, x)
        # a float64 copy, then in place: exp(x - max) / sum, rounded once; float16 and bfloat16
        # stay in their own precision, as the specification computes them
        e = v.astype(np.float64 if v.dtype.itemsize >= 4 else v.dtype)
        with np.errstate(invalid="ignore"):  # a row of -inf gives NaN, as in torch
            e -= e.max(axis=axis, keepdims=True)
            np.exp(e, out=e)
            e /= e.sum(axis=axis, keepdims=True)
        return [e.astype(x.dtype).reshape(shape)]

    return run


@register("LogSoftmax")
def log_softmax(node, graph, opts):
    def run(x):
        v, axis, shape = _softmax_axes(node, graph, x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return [_log_softmax(v.astype(np.float64), axis).astype(x.dtype).reshape(shape)]

    return run


@register("Hardmax")
def hardmax(node, graph, opts):
    def run(x):
        v, axis, shape = _softmax_axes(node, graph, x)
        hot = np.zeros_like(v)
        np.put_along_axis(hot, np.expand_dims(v.argmax(axis=axis), axis), 1, axis=axis)
        return [hot.reshape(shape)]

    return run


def _stash(node) -> type:
    return np.float64 if node.attrs.get("stash_type") == 11 else np.float32


@register("LayerNormalization")
def layer_normalization(node, graph, opts):
    axis, eps, stash = node.attrs["axis"], node.attrs["epsilon"], _stash(node)

    def run(x, scale, bias=None):
        # the specification's steps (one row per normalised group: sum / n, d = x - mean,
        # sum(d * d) / n, d / sqrt(var + eps); then Cast, times scale, plus bias), the
        # statistics and the normalised value in float64 whatever stash_type says, rounded once
        a = axis % x.ndim
        stats_shape = x.shape[:a] + (1,) * (x.ndim - a)
        rows, cols = int(np.prod(x.shape[:a], dtype=np.int64)), int(np.prod(x.shape[a:], dtype=np.int64))
        d = x.astype(np.float64).reshape(rows, cols)  # the one full-size temporary, then in place
        mean = d.sum(axis=1, keepdims=True) / cols
        d -= mean
        std = np.square(d).sum(axis=1, keepdims=True) / cols
        std += eps
        np.sqrt(std, out=std)
        d /= std
        y = d.astype(x.dtype).reshape(x.shape)
        y *= scale
        if bias is not None:
            y += bias
        return [y, mean.astype(stash).reshape(stats_shape), (1 / std).astype(stash).reshape(stats_shape)]

    return run


@register("RMSNormalization")
def rms_normalization(node, graph, opts):
    axis, eps, stash = node.attrs["axis"], node.attrs["epsilon"], _stash(node)

    def run(x, scale):
        axes = tuple(range(axis % x.ndim, x.ndim))
        xs = x.astype(stash)
        inv = 1 / np.sqrt((xs**2).mean(axis=axes, keepdims=True) + stash(eps))
        return [((xs * inv).astype(x.dtype) * scale).astype(x.dtype)]

    return run


@register("BatchNormalization")
def batch_normalization(node, graph, opts):
    eps, momentum, training = node.attrs["epsilon"], node.attrs["momentum"], node.attrs["training_mode"]

    def run(x, scale, bias, mean, var):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if not training:
            # the specification's order, scale * (x - mean) / sqrt(var + eps) + bias, so every
            # rounding is the reference's (ORT folds to x * s' + b': other ulps, other codes
            # after a QuantizeLinear near a .5 boundary)
            y = np.subtract(x, mean.reshape(shape))
            y *= scale.reshape(shape)
            y /= np.sqrt(var.reshape(shape) + x.dtype.type(eps))
            y += bias.reshape(shape)
            return [y.astype(x.dtype, copy=False)]
        axes = (0, *range(2, x.ndim))
        batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
        y = (x - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + x.dtype.type(eps))
        y = y * scale.reshape(shape) + bias.reshape(shape)
        run_mean = mean * momentum + batch_mean * (1 - momentum)
        run_var = var * momentum + batch_var * (1 - momentum)
        return [y.astype(x.dtype), run_mean.astype(mean.dtype), run_var.astype(var.dtype)]

    return run


@register("InstanceNormalization")
def instance_normalization(node, graph, opts):
    eps = node.attrs["epsilon"]

    def run(x, scale, bias):
        axes, shape = tuple(range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + x.dtype.type(eps)) * scale.reshape(shape) + bias.reshape(shape)
        return [y.astype(x.dtype)]

    return run


@register("GroupNormalization")
def group_normalization(node, graph, opts):
    """Opset 21 form (scale and bias per channel); opset 18's per-group scale is repeated."""
    groups, eps, stash = node.attrs["num_groups"], node.attrs["epsilon"], _stash(node)

    def run(x, scale, bias):
        n, c = x.shape[:2]
        xg = x.reshape(n, groups, -1).astype(stash)
        mean, var = xg.mean(axis=2, keepdims=True), xg.var(axis=2, keepdims=True)
        y = ((xg - mean) / np.sqrt(var + stash(eps))).reshape(x.shape).astype(x.dtype)
        shape = (1, c) + (1,) * (x.ndim - 2)
        if scale.size != c:
            scale, bias = np.repeat(scale, c // groups), np.repeat(bias, c // groups)
        return [(y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)]

    return run


@register("MeanVarianceNormalization")
def mean_variance_normalization(node, graph, opts):
    axes = tuple(node.attrs["axes"])

    def run(x):
        mean = x.mean(axis=axes, keepdims=True)
        std = np.sqrt((x**2).mean(axis=axes, keepdims=True) - mean**2)
        return [((x - mean) / (std + x.dtype.type(1e-9))).astype(x.dtype)]

    return run


@register("LpNormalization")
def lp_normalization(node, graph, opts):
    axis, p = node.attrs["axis"], node.attrs["p"]

    def run(x):
        norm = np.abs(x).sum(axis=axis, keepdims=True) if p == 1 else np.sqrt((x * x).sum(axis=axis, keepdims=True))
        with np.errstate(invalid="ignore", divide="ignore"):
            return [np.where(norm == 0, 0, x / norm).astype(x.dtype)]

    return run


@register("LRN")
def lrn(node, graph, opts):
    """Across-channel local response normalization: x / (bias + alpha/size * sum(x^2))^beta
    over the window [c - floor((size-1)/2), c + ceil((size-1)/2)]."""
    a, b, bias, size = node.attrs["alpha"], node.attrs["beta"], node.attrs["bias"], node.attrs["size"]

    def run(x):
        sq = (x * x).astype(np.float32)
        lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
        padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
        window = sum(padded[:, i : i + x.shape[1]] for i in range(size))
        return [(x / (bias + a / size * window) ** b).astype(x.dtype)]

    return run
