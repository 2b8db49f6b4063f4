"""Softmax, LayerNormalization, BatchNormalization and ReduceMean (fp32, numpy)."""

from __future__ import annotations

import numpy as np

from runtime.ops.registry import register


@register("Softmax")
def softmax(node, graph, opts):
    axis = node.attrs.get("axis", -1)

    def run(x):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return [(e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)]

    return run


@register("LayerNormalization")
def layer_normalization(node, graph, opts):
    axis, eps = node.attrs.get("axis", -1), np.float32(node.attrs.get("epsilon", 1e-5))

    def run(x, scale, bias=None):
        axes = tuple(range(axis % x.ndim, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        y = (x - mean) / np.sqrt(var + eps) * scale
        return [(y if bias is None else y + bias).astype(x.dtype)]

    return run


@register("BatchNormalization")
def batch_normalization(node, graph, opts):
    eps = np.float32(node.attrs.get("epsilon", 1e-5))

    def run(x, scale, bias, mean, var):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(
            shape
        ) + bias.reshape(shape)
        return [y.astype(x.dtype)]

    return run


@register("ReduceMean")
def reduce_mean(node, graph, opts):
    keepdims = bool(node.attrs.get("keepdims", 1))

    def run(x, axes=None):
        axes = node.attrs.get("axes") if axes is None else [int(a) for a in axes]
        if axes is None or len(axes) == 0:
            if node.attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.ndim))
        return [x.mean(axis=tuple(axes), keepdims=keepdims).astype(x.dtype)]

    return run
