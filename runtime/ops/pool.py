"""MaxPool, AveragePool, LpPool and the global pools, 1-D/2-D/3-D, in numpy.

MaxPool also runs on quantized tensors directly (max commutes with a monotone
dequantization), in NCHW or, when the layout pass set ``channels_last``, NHWC (2-D, through
the C kernel)."""

from __future__ import annotations

import numpy as np

from runtime import kernels
from runtime.graph import MS_DOMAIN
from runtime.ops.registry import QdqFold, register
from runtime.ops.window_nd import Window, pad, taps, window


def spatial_first(node) -> int:
    """Index of the first spatial axis: 1 in NHWC (layout pass's ``channels_last``), else 2."""
    return 1 if node.attrs.get("channels_last", 0) else 2


def _spatial(node, x: np.ndarray) -> tuple[int, ...]:
    first = spatial_first(node)
    return x.shape[first : first + x.ndim - 2]


def _window(node, x: np.ndarray, where: str) -> Window:
    return window(node.attrs, tuple(node.attrs["kernel_shape"]), _spatial(node, x), where)


def _max_indices(x: np.ndarray, win: Window, storage_order: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over windows of NC... x, with the flat index (row- or column-major per
    storage_order) of the first maximum, as MaxPool's Indices output defines."""
    spatial = x.shape[2:]
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    best, where = None, None
    out_shape = win.output_shape(spatial)
    grids = np.meshgrid(*(np.arange(o) for o in out_shape), indexing="ij")
    for offset, view in taps(pad(x, win, fill, 2), win, 2):
        coords = [
            g * s + o * d - b
            for g, s, o, d, b in zip(grids, win.strides, offset, win.dilations, win.begin, strict=True)
        ]
        if storage_order:
            flat, mult = np.zeros(out_shape, np.int64), 1
            for c, n in zip(coords, spatial, strict=True):
                flat, mult = flat + c * mult, mult * n
        else:
            flat = np.ravel_multi_index(
                [np.clip(c, 0, n - 1) for c, n in zip(coords, spatial, strict=True)], spatial
            ).astype(np.int64)
        if best is None:
            best, where = view.copy(), np.broadcast_to(flat, view.shape).copy()
        else:
            better = view > best
            best = np.where(better, view, best)
            where = np.where(better, flat, where)
    n, c = x.shape[:2]
    base = (np.arange(n * c, dtype=np.int64) * int(np.prod(spatial))).reshape(n, c, *([1] * len(spatial)))
    return best, where + base


@register("MaxPool", grid="keeps", defaults={"storage_order": 0})
def max_pool(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"
    first = spatial_first(node)
    want_indices = len(node.outputs) > 1 and node.outputs[1]

    def run(x: np.ndarray) -> list[np.ndarray]:
        win = _window(node, x, where)
        if want_indices:
            return list(_max_indices(x, win, node.attrs["storage_order"]))
        if first == 1 and x.ndim == 4 and x.dtype in (np.uint8, np.int8) and max(win.begin + win.end) < min(win.kernel):
            geom = kernels.ConvGeometry(win.kernel, win.strides, win.dilations, (*win.begin, *win.end))
            return [kernels.maxpool_nhwc(x, geom, opts.threads)]
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        out = None
        for _, view in taps(pad(x, win, fill, first), win, first):
            out = view.copy() if out is None else np.maximum(out, view, out=out)
        return [out]

    return run


def average_pool_sum(x: np.ndarray, node, where: str) -> tuple[np.ndarray, np.ndarray | np.float32]:
    """Window sums (fp32, or int32 for integer input) and the element count of each window;
    explicit pads count only with count_include_pad, ceil_mode's extra pads never."""
    first = spatial_first(node)
    win = _window(node, x, where)
    acc_type = np.float32 if x.dtype.kind == "f" else np.int32
    total = None
    for _, view in taps(pad(x, win, 0, first), win, first):
        total = view.astype(acc_type) if total is None else np.add(total, view, out=total, dtype=acc_type)
    include = node.attrs.get("count_include_pad", 0)
    if not any(win.end) and not any(win.begin) or (include and not any(win.ceil_pads)):
        return total, np.float32(np.prod(win.kernel))
    spatial = _spatial(node, x)
    shape = [1] * x.ndim
    shape[first : first + len(spatial)] = spatial
    ones = np.ones(shape, np.float32)
    if include:  # explicit pads count: pad them with ones, then the ceil part with zeros
        explicit = Window(
            win.kernel,
            win.strides,
            win.dilations,
            win.begin,
            tuple(e - c for e, c in zip(win.end, win.ceil_pads, strict=True)),
            win.ceil_pads,
        )
        ones = pad(ones, explicit, 1.0, first)
        ceil_only = Window(win.kernel, win.strides, win.dilations, (0,) * len(spatial), win.ceil_pads, win.ceil_pads)
        padded = pad(ones, ceil_only, 0.0, first)
    else:
        padded = pad(ones, win, 0.0, first)
    count = sum(view for _, view in taps(padded, win, first))
    return total, count.astype(np.float32)


@register(
    "AveragePool",
    grid="requantizes",
    fold=QdqFold("elementwise", (MS_DOMAIN, "QLinearAveragePool")),
)
def average_pool(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"

    def run(x):
        total, count = average_pool_sum(x, node, where)
        return [(total / count).astype(x.dtype)]

    return run


@register("LpPool")
def lp_pool(node, graph, opts):
    where, p = f"{graph.source}: {node.describe()}", node.attrs["p"]

    def run(x):
        win = _window(node, x, where)
        total = sum(np.abs(view) ** p for _, view in taps(pad(x, win, 0, 2), win, 2))
        return [(total ** (1.0 / p)).astype(x.dtype)]

    return run


@register(
    "GlobalAveragePool",
    grid="requantizes",
    fold=QdqFold("elementwise", (MS_DOMAIN, "QLinearGlobalAveragePool")),
)
def global_average_pool(node, graph, opts):
    def run(x):
        acc = np.float64 if x.dtype == np.float64 else np.float32
        return [x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=acc).astype(x.dtype)]

    return run


@register("GlobalMaxPool", grid="keeps")
def global_max_pool(node, graph, opts):
    return lambda x: [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]
