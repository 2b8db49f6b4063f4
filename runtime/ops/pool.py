"""MaxPool, AveragePool and GlobalAveragePool in numpy.

MaxPool also runs on quantized tensors directly (max commutes with a monotone
dequantization), in NCHW or, when the layout pass set ``channels_last``, NHWC."""

from __future__ import annotations

import numpy as np

from runtime import kernels
from runtime.errors import InferenceError
from runtime.ops.conv_geometry import conv_geometry
from runtime.ops.registry import register
from runtime.ops.windows import ceil_mode_pads, pad_spatial, taps


def spatial_axes(node) -> tuple[int, int]:
    """(H, W) axes: NHWC when the layout pass set channels_last, else NCHW."""
    return (1, 2) if node.attrs.get("channels_last", 0) else (2, 3)


def _geometry(node, x: np.ndarray, where: str):
    if x.ndim != 4:
        raise InferenceError(f"{where}: only 2-D pooling is supported (input {x.shape})")
    hw = tuple(x.shape[a] for a in spatial_axes(node))
    geom = conv_geometry(node.attrs, tuple(node.attrs["kernel_shape"]), hw, where)
    return ceil_mode_pads(geom, hw) if node.attrs.get("ceil_mode", 0) else geom


@register("MaxPool")
def max_pool(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"
    if len(node.outputs) > 1 and node.outputs[1]:
        raise InferenceError(f"{where}: the Indices output of MaxPool is not supported")
    axes = spatial_axes(node)

    def run(x: np.ndarray) -> list[np.ndarray]:
        geom = _geometry(node, x, where)
        if axes == (1, 2) and x.dtype in (np.uint8, np.int8) and max(geom.pads) < min(geom.kernel):
            return [kernels.maxpool_nhwc(x, geom, opts.threads)]
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        out = None
        for view in taps(pad_spatial(x, geom, fill, axes), geom, axes):
            out = view.copy() if out is None else np.maximum(out, view, out=out)
        return [out]

    return run


def average_pool_sum(x: np.ndarray, node, where: str) -> tuple[np.ndarray, np.ndarray | np.float32]:
    """Window sums (fp32, or int32 for integer input) and the element count of each window;
    padded taps count only with count_include_pad."""
    axes = spatial_axes(node)
    geom = _geometry(node, x, where)
    acc_type = np.float32 if x.dtype.kind == "f" else np.int32
    total = None
    for view in taps(pad_spatial(x, geom, 0, axes), geom, axes):
        total = view.astype(acc_type) if total is None else np.add(total, view, out=total, dtype=acc_type)
    if node.attrs.get("count_include_pad", 0) or not any(geom.pads):
        return total, np.float32(geom.kernel[0] * geom.kernel[1])
    ones = np.ones([1 if i not in axes else x.shape[i] for i in range(4)], np.float32)
    count = sum(taps(pad_spatial(ones, geom, 0.0, axes), geom, axes))
    return total, count.astype(np.float32)


@register("AveragePool")
def average_pool(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"

    def run(x):
        total, count = average_pool_sum(x, node, where)
        return [(total / count).astype(np.float32)]

    return run


@register("GlobalAveragePool")
def global_average_pool(node, graph, opts):
    return lambda x: [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float32).astype(x.dtype)]


@register("GlobalMaxPool")
def global_max_pool(node, graph, opts):
    return lambda x: [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]
