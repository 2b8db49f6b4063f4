"""Shape and data-movement ops.  All work on any dtype, quantized tensors included; those that
only move or select elements keep their input's quantization grid (``grid="keeps"``), so the
integer fold runs them on the codes directly."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from runtime.errors import InferenceError
from runtime.graph import MS_DOMAIN
from runtime.ops.registry import QdqFold, register


@register("Identity", grid="keeps")
def identity(node, graph, opts):
    return lambda x: [x]


@register("Dropout", grid="keeps")
def dropout(node, graph, opts):
    """Inference: the input itself, and an all-true mask when asked for (ratio and
    training_mode inputs are accepted; training mode is refused, it is random by definition)."""
    where = f"{graph.source}: {node.describe()}"

    def run(x, ratio=None, training_mode=None):
        if (
            training_mode is not None
            and bool(np.asarray(training_mode))
            and float(0.5 if ratio is None else np.asarray(ratio))
        ):
            raise InferenceError(f"{where}: training_mode=True is random; the runtime runs inference only")
        return [x, np.ones(x.shape, np.bool_)]

    return run


@register("Constant")
def constant(node, graph, opts):
    attrs = {k: v for k, v in node.attrs.items() if k not in ("fused_min", "fused_max")}
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
        raise InferenceError(f"{graph.source}: {node.describe()}: unsupported Constant attribute {list(attrs)}")
    return lambda: [value]


@register("Flatten", grid="keeps")
def flatten(node, graph, opts):
    axis = node.attrs["axis"]

    def run(x):
        a = axis % x.ndim if x.ndim and axis < 0 else axis
        return [x.reshape(int(np.prod(x.shape[:a], dtype=np.int64)), -1)]

    return run


@register("Reshape", grid="keeps")
def reshape(node, graph, opts):
    allowzero = node.attrs["allowzero"]

    def run(x, shape):
        shape = [int(s) for s in shape]
        if not allowzero:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return [x.reshape(shape)]

    return run


@register("Transpose", grid="keeps")
def transpose(node, graph, opts):
    perm = node.attrs.get("perm")
    return lambda x: [np.transpose(x, perm)]


@register("Concat", fold=QdqFold("concat", (MS_DOMAIN, "QLinearConcat")))
def concat(node, graph, opts):
    axis = node.attrs["axis"]
    return lambda *xs: [np.concatenate(xs, axis=axis)]


@register("Shape")
def shape(node, graph, opts):
    start, end = node.attrs["start"], node.attrs.get("end")
    return lambda x: [np.asarray(x.shape[start:end], np.int64)]


@register("Size")
def size(node, graph, opts):
    return lambda x: [np.asarray(x.size, np.int64)]


@register("Gather", grid="keeps")
def gather(node, graph, opts):
    axis = node.attrs["axis"]
    return lambda x, idx: [np.take(x, idx.astype(np.int64), axis=axis)]


@register("GatherElements", grid="keeps")
def gather_elements(node, graph, opts):
    axis = node.attrs["axis"]

    def run(x, idx):
        idx = np.where(idx < 0, idx + x.shape[axis], idx).astype(np.int64)
        return [np.take_along_axis(x, idx, axis=axis)]

    return run


@register("GatherND", grid="keeps")
def gather_nd(node, graph, opts):
    b = node.attrs["batch_dims"]

    def run(x, idx):
        idx = idx.astype(np.int64)
        batch = x.shape[:b]
        nb = int(np.prod(batch, dtype=np.int64))
        xb = x.reshape(nb, *x.shape[b:])
        ib = idx.reshape(nb, -1, idx.shape[-1])
        out = np.stack([xb[i][tuple(np.moveaxis(ib[i], -1, 0))] for i in range(nb)])
        return [out.reshape(*batch, *idx.shape[b:-1], *x.shape[b + idx.shape[-1] :])]

    return run


def _axes(node, given):
    if given is not None:
        return [int(a) for a in np.asarray(given).reshape(-1)]
    return node.attrs.get("axes")


@register("Unsqueeze", grid="keeps")
def unsqueeze(node, graph, opts):
    def run(x, axes=None):
        axes = _axes(node, axes)
        rank = x.ndim + len(axes)
        return [np.expand_dims(x, tuple(sorted(a % rank for a in axes)))]

    return run


@register("Squeeze", grid="keeps")
def squeeze(node, graph, opts):
    def run(x, axes=None):
        axes = _axes(node, axes)
        return [np.squeeze(x, axis=None if axes is None else tuple(a % x.ndim for a in axes))]

    return run


def _slice_bound(v: int, dim: int, step: int) -> int | None:
    """ONNX's clamping of a start/end (negative counts from the end; -1 after clamping a
    negative-step end means 'past the first element', spelled None for Python)."""
    v = v + dim if v < 0 else v
    v = min(max(v, 0), dim) if step > 0 else min(max(v, -1), dim - 1)
    return None if v < 0 else v


@register("Slice", grid="keeps")
def slice_(node, graph, opts):
    attr_starts, attr_ends, attr_axes = (node.attrs.get(k) for k in ("starts", "ends", "axes"))  # opset < 10

    def run(x, starts=None, ends=None, axes=None, steps=None):
        starts = attr_starts if starts is None else starts
        ends = attr_ends if ends is None else ends
        axes = attr_axes if axes is None else axes
        axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in axes]
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            st = int(st)
            index[a] = slice(_slice_bound(int(s), x.shape[a], st), _slice_bound(int(e), x.shape[a], st), st)
        return [x[tuple(index)]]

    return run


_FLOAT8 = {
    onnx.TensorProto.FLOAT8E4M3FN,
    onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2,
    onnx.TensorProto.FLOAT8E5M2FNUZ,
    onnx.TensorProto.STRING,
}


def _target_dtype(to: int, node, graph) -> np.dtype:
    """numpy dtype of an ONNX element type; strings, float8 and sub-byte types are refused."""
    if to in _FLOAT8 or to in (getattr(onnx.TensorProto, n, -1) for n in ("FLOAT8E8M0", "FLOAT4E2M1")):
        raise InferenceError(
            f"{graph.source}: {node.describe()}: casting to {onnx.TensorProto.DataType.Name(to)} is not supported"
        )
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    if dtype.itemsize == 1 and dtype.kind not in "iub":  # int4/uint4/int2 etc. map to 1-byte ml_dtypes
        raise InferenceError(
            f"{graph.source}: {node.describe()}: casting to {onnx.TensorProto.DataType.Name(to)} is not supported"
        )
    return dtype


def _cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """astype, but float -> integer truncates toward zero without numpy's NaN warnings."""
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype)


@register("Cast")
def cast(node, graph, opts):
    dtype = _target_dtype(node.attrs["to"], node, graph)
    return lambda x: [_cast(x, dtype)]


@register("CastLike")
def cast_like(node, graph, opts):
    return lambda x, like: [_cast(x, like.dtype)]


@register("Expand", grid="keeps")
def expand(node, graph, opts):
    def run(x, shape):
        target = np.broadcast_shapes(x.shape, tuple(int(s) for s in shape))
        return [np.array(np.broadcast_to(x, target))]

    return run


@register("Tile", grid="keeps")
def tile(node, graph, opts):
    return lambda x, repeats: [np.tile(x, [int(r) for r in repeats])]


@register("ConstantOfShape")
def constant_of_shape(node, graph, opts):
    value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).reshape(-1)
    return lambda shape: [np.full([int(s) for s in shape], value[0], value.dtype)]


@register("Range")
def range_(node, graph, opts):
    def run(start, limit, delta):
        n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
        return [
            (start + np.arange(n, dtype=np.float64 if start.dtype.kind == "f" else np.int64) * delta).astype(
                start.dtype
            )
        ]

    return run


@register("Split", grid="keeps")
def split(node, graph, opts):
    axis, n_out = node.attrs["axis"], len(node.outputs)

    def run(x, sizes=None):
        dim = x.shape[axis]
        if sizes is None:
            sizes = node.attrs.get("split")
        if sizes is None:
            n = node.attrs.get("num_outputs", n_out)
            chunk = -(-dim // n)
            sizes = [min(chunk, dim - i * chunk) for i in range(n)]
        bounds = np.cumsum([int(s) for s in sizes])[:-1]
        return np.split(x, bounds, axis=axis)

    return run


@register("Pad", choices={"mode": ("constant", "reflect", "edge", "wrap")})
def pad(node, graph, opts):
    mode = node.attrs["mode"]
    attr_pads, attr_value = node.attrs.get("pads"), node.attrs.get("value", 0.0)  # opset < 11

    def run(x, pads=None, value=None, axes=None):
        pads = [int(p) for p in (attr_pads if pads is None else pads)]
        value = attr_value if value is None else np.asarray(value).reshape(-1)[0]
        axes = range(x.ndim) if axes is None else [int(a) % x.ndim for a in axes]
        widths, crop = [(0, 0)] * x.ndim, [slice(None)] * x.ndim
        n = len(pads) // 2
        for i, a in enumerate(axes):
            lo, hi = pads[i], pads[i + n]
            widths[a] = (max(lo, 0), max(hi, 0))
            crop[a] = slice(max(-lo, 0), x.shape[a] - max(-hi, 0))
        x = x[tuple(crop)]
        if mode == "constant":
            return [np.pad(x, widths, mode="constant", constant_values=value)]
        return [np.pad(x, widths, mode=mode)]

    return run


@register("EyeLike")
def eye_like(node, graph, opts):
    k, to = node.attrs["k"], node.attrs.get("dtype")

    def run(x):
        dtype = x.dtype if to is None else _target_dtype(to, node, graph)
        return [np.eye(x.shape[0], x.shape[1], k=k, dtype=dtype)]

    return run


@register("Trilu")
def trilu(node, graph, opts):
    upper = node.attrs["upper"]
    return lambda x, k=None: [(np.triu if upper else np.tril)(x, 0 if k is None else int(np.asarray(k).reshape(())))]


@register("DepthToSpace", grid="keeps")
def depth_to_space(node, graph, opts):
    b, mode = node.attrs["blocksize"], node.attrs["mode"]

    def run(x):
        n, c, h, w = x.shape
        if mode == "DCR":
            y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        return [y.reshape(n, c // (b * b), h * b, w * b)]

    return run


@register("SpaceToDepth", grid="keeps")
def space_to_depth(node, graph, opts):
    b, crd = node.attrs["blocksize"], node.attrs.get("mode", "DCR") == "CRD"

    def run(x):
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // b, b, w // b, b).transpose((0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4))
        return [y.reshape(n, c * b * b, h // b, w // b)]

    return run


@register("OneHot")
def one_hot(node, graph, opts):
    axis = node.attrs["axis"]

    def run(indices, depth, values):
        d = int(np.asarray(depth).reshape(-1)[0])
        idx = indices.astype(np.int64)
        idx = np.where(idx < 0, idx + d, idx)
        hot = np.arange(d) == idx[..., None]
        out = np.where(hot, values[1], values[0]).astype(values.dtype)
        return [np.moveaxis(out, -1, axis if axis >= 0 else out.ndim + axis)]

    return run


@register("NonZero")
def non_zero(node, graph, opts):
    return lambda x: [np.asarray(np.nonzero(x), np.int64).reshape(x.ndim, -1)]


@register("TopK")
def top_k(node, graph, opts):
    axis, largest, sort = node.attrs["axis"], node.attrs["largest"], node.attrs["sorted"]

    def run(x, k):
        k = int(np.asarray(k).reshape(-1)[0])
        keys = -x.astype(np.float64) if largest else x
        order = np.argsort(keys, axis=axis, kind="stable")
        idx = np.take(order, np.arange(k), axis=axis)
        if not sort:
            idx = np.sort(idx, axis=axis)
        return [np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)]

    return run


@register("CumSum")
def cum_sum(node, graph, opts):
    exclusive, reverse = node.attrs["exclusive"], node.attrs["reverse"]

    def run(x, axis):
        a = int(np.asarray(axis).reshape(()))
        y = np.flip(x, a) if reverse else x
        out = np.cumsum(y, axis=a, dtype=x.dtype)
        if exclusive:
            out = out - y
        return [np.flip(out, a) if reverse else out]

    return run


_REDUCE = {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


@register("ScatterElements", choices={"reduction": tuple(_REDUCE)})
def scatter_elements(node, graph, opts):
    axis, fn = node.attrs["axis"], _REDUCE[node.attrs["reduction"]]

    def run(x, idx, updates):
        out = x.copy()
        idx = np.where(idx < 0, idx + x.shape[axis], idx).astype(np.int64)
        full = list(np.indices(idx.shape, sparse=True))
        full[axis] = idx
        if fn is None:
            out[tuple(full)] = updates
        else:
            fn.at(out, tuple(np.broadcast_arrays(*full)), updates)
        return [out]

    return run


@register("ScatterND", choices={"reduction": tuple(_REDUCE)})
def scatter_nd(node, graph, opts):
    fn = _REDUCE[node.attrs["reduction"]]

    def run(x, idx, updates):
        out = x.copy()
        index = tuple(np.moveaxis(idx.astype(np.int64), -1, 0))
        if fn is None:
            out[index] = updates
        else:
            fn.at(out, index, updates)
        return [out]

    return run


@register("Compress", grid="keeps")
def compress(node, graph, opts):
    axis = node.attrs.get("axis")
    return lambda x, cond: [np.compress(cond.astype(bool), x, axis=axis)]


@register("ReverseSequence", grid="keeps")
def reverse_sequence(node, graph, opts):
    batch_axis, time_axis = node.attrs["batch_axis"], node.attrs["time_axis"]

    def run(x, lengths):
        out = x.copy()
        for b, n in enumerate(lengths):
            src = [slice(None)] * x.ndim
            src[batch_axis], src[time_axis] = b, slice(None, int(n))
            out[tuple(src)] = np.flip(x[tuple(src)], axis=time_axis - (batch_axis < time_axis))
        return [out]

    return run
