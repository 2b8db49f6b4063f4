"""Shape and data-movement ops.  All work on any dtype, quantized tensors included."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from runtime.errors import InferenceError
from runtime.ops.registry import register


@register("Identity")
def identity(node, graph, opts):
    return lambda x: [x]


@register("Constant")
def constant(node, graph, opts):
    attrs = node.attrs
    if "value" in attrs:
        value = np.asarray(attrs["value"])
    elif "value_float" in attrs or "value_int" in attrs:
        value = np.asarray(
            attrs.get("value_float", attrs.get("value_int")),
            np.float32 if "value_float" in attrs else np.int64,
        )
    elif "value_floats" in attrs or "value_ints" in attrs:
        value = np.asarray(
            attrs.get("value_floats", attrs.get("value_ints")),
            np.float32 if "value_floats" in attrs else np.int64,
        )
    else:
        raise InferenceError(
            f"{graph.source}: {node.describe()}: unsupported Constant attribute {list(attrs)}"
        )
    return lambda: [value]


@register("Flatten")
def flatten(node, graph, opts):
    axis = node.attrs.get("axis", 1)

    def run(x):
        a = axis % x.ndim if x.ndim else 0
        return [x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1)]

    return run


@register("Reshape")
def reshape(node, graph, opts):
    allowzero = node.attrs.get("allowzero", 0)

    def run(x, shape):
        shape = [int(s) for s in shape]
        if not allowzero:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return [x.reshape(shape)]

    return run


@register("Transpose")
def transpose(node, graph, opts):
    perm = node.attrs.get("perm")
    return lambda x: [np.transpose(x, perm)]


@register("Concat")
def concat(node, graph, opts):
    axis = node.attrs["axis"]
    return lambda *xs: [np.concatenate(xs, axis=axis)]


@register("Shape")
def shape(node, graph, opts):
    start, end = node.attrs.get("start", 0), node.attrs.get("end")
    return lambda x: [np.asarray(x.shape[start:end], np.int64)]


@register("Gather")
def gather(node, graph, opts):
    axis = node.attrs.get("axis", 0)
    return lambda x, idx: [np.take(x, idx.astype(np.int64), axis=axis)]


def _axes(node, given):
    if given is not None:
        return [int(a) for a in np.asarray(given).reshape(-1)]
    return node.attrs.get("axes")


@register("Unsqueeze")
def unsqueeze(node, graph, opts):
    def run(x, axes=None):
        axes = _axes(node, axes)
        rank = x.ndim + len(axes)
        return [np.expand_dims(x, tuple(sorted(a % rank for a in axes)))]

    return run


@register("Squeeze")
def squeeze(node, graph, opts):
    def run(x, axes=None):
        axes = _axes(node, axes)
        return [np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))]

    return run


@register("Slice")
def slice_(node, graph, opts):
    def run(x, starts, ends, axes=None, steps=None):
        axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in axes]
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            index[a] = slice(int(max(min(s, 2**62), -(2**62))), int(max(min(e, 2**62), -(2**62))), int(st))
        return [x[tuple(index)]]

    return run


@register("Cast")
def cast(node, graph, opts):
    dtype = helper.tensor_dtype_to_np_dtype(node.attrs["to"])
    if node.attrs["to"] == onnx.TensorProto.STRING:
        raise InferenceError(f"{graph.source}: {node.describe()}: casting to string is not supported")
    return lambda x: [x.astype(dtype)]


@register("Expand")
def expand(node, graph, opts):
    return lambda x, shape: [x * np.ones([int(s) for s in shape], x.dtype)]


@register("ConstantOfShape")
def constant_of_shape(node, graph, opts):
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    return lambda shape: [np.full([int(s) for s in shape], value[0], value.dtype)]
