"""Resize (opset 10-19) and Upsample: nearest, linear and cubic, separable along each resized
axis, with every coordinate transformation mode ONNX defines (half_pixel and
pytorch_half_pixel are what torch emits for bilinear, asymmetric for nearest).

Each axis is one gather of at most four taps and a weighted sum, so the whole resize is a few
vectorised numpy passes; integer inputs are rounded back to their type."""

from __future__ import annotations

import numpy as np

from runtime.errors import InferenceError
from runtime.ops.registry import register

_COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)


def _source_coords(mode: str, n_in: int, n_out: int, scale: float, roi: tuple[float, float]) -> np.ndarray:
    """Input coordinate of every output index along one axis.  ``length`` is the resized
    length before rounding (n_in * scale), which ONNX's formulas use."""
    x = np.arange(n_out, dtype=np.float64)
    length = n_in * scale
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = n_out / length
        offset = n_in / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if length > 1 else np.zeros(n_out)
    if mode == "align_corners":
        return x * (n_in - 1) / (length - 1) if length > 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return x / scale
    start, end = roi
    if length > 1:
        return start * (n_in - 1) + x * (end - start) * (n_in - 1) / (length - 1)
    return np.full(n_out, 0.5 * (start + end) * (n_in - 1))


def _nearest(coords: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "round_prefer_floor":
        return np.ceil(coords - 0.5)
    if rounding == "round_prefer_ceil":
        return np.floor(coords + 0.5)
    return np.floor(coords) if rounding == "floor" else np.ceil(coords)


def _cubic_coeffs(r: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution weights of the taps at floor-1 .. floor+2, shape (4, n)."""

    def far(t):
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a

    def near(t):
        return ((a + 2) * t - (a + 3)) * t * t + 1

    return np.stack([far(r + 1), near(r), near(1 - r), far(2 - r)])


def _taps(attrs: dict, coords: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (taps, n_out), of one axis's interpolation."""
    mode = attrs["mode"]
    if mode == "nearest":
        idx = _nearest(coords, attrs["nearest_mode"])
        return np.clip(idx, 0, n_in - 1).astype(np.int64)[None], np.ones((1, coords.size))
    base = np.floor(coords)
    r = coords - base
    if mode == "linear":
        offsets, weights = np.array([0, 1]), np.stack([1 - r, r])
    else:
        offsets, weights = np.array([-1, 0, 1, 2]), _cubic_coeffs(r, attrs["cubic_coeff_a"])
    idx = base[None].astype(np.int64) + offsets[:, None]
    if attrs.get("exclude_outside", 0):
        weights = np.where((idx < 0) | (idx >= n_in), 0, weights)
        weights = weights / weights.sum(axis=0, keepdims=True)
    return np.clip(idx, 0, n_in - 1), weights


def _resize_axis(x: np.ndarray, axis: int, n_out: int, scale: float, roi, attrs: dict) -> np.ndarray:
    n_in = x.shape[axis]
    coords = _source_coords(attrs["coordinate_transformation_mode"], n_in, n_out, scale, roi)
    idx, weights = _taps(attrs, coords, n_in)
    shape = [1] * x.ndim
    shape[axis] = n_out
    if weights.shape[0] == 1:
        y = np.take(x, idx[0], axis=axis)
    else:
        y = sum(
            np.take(x, i, axis=axis).astype(np.float64) * w.reshape(shape) for i, w in zip(idx, weights, strict=True)
        )
    if attrs["coordinate_transformation_mode"] == "tf_crop_and_resize":
        outside = ((coords < 0) | (coords > n_in - 1)).reshape(shape)
        y = np.where(outside, attrs["extrapolation_value"], y)
    return y


def resize(x: np.ndarray, scales: list[float], sizes: list[int], roi: np.ndarray | None, attrs: dict) -> np.ndarray:
    """x resized to ``sizes`` with per-axis ``scales`` (both full-rank)."""
    y = x
    for axis in range(x.ndim):
        if sizes[axis] == x.shape[axis] and scales[axis] == 1.0:
            continue
        r = (0.0, 1.0) if roi is None else (float(roi[axis]), float(roi[axis + x.ndim]))
        y = _resize_axis(y, axis, sizes[axis], scales[axis], r, attrs)
    if x.dtype.kind in "iub":
        info = np.iinfo(x.dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(x.dtype)
    return y.astype(x.dtype, copy=False)


def _full(values, axes, rank: int, fill) -> list:
    out = [fill] * rank
    for a, v in zip(axes, values, strict=True):
        out[a % rank] = v
    return out


@register(
    "Resize",
    defaults={"coordinate_transformation_mode": "half_pixel", "nearest_mode": "round_prefer_floor"},
    choices={
        "mode": ("nearest", "linear", "cubic"),
        "coordinate_transformation_mode": _COORDINATE_MODES,
        "nearest_mode": ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"),
        "antialias": (0,),
        "keep_aspect_ratio_policy": ("stretch", "not_larger", "not_smaller"),
    },
)
def resize_op(node, graph, opts):
    attrs = dict(node.attrs)
    where = f"{graph.source}: {node.describe()}"
    if graph.opsets.get("", 19) < 11:  # Resize-10: asymmetric coordinates, inputs (X, scales)
        attrs["coordinate_transformation_mode"] = "asymmetric"
        attrs["nearest_mode"] = "floor"
    axes_attr = attrs.get("axes")

    def run(x, roi=None, scales=None, sizes=None):
        if graph.opsets.get("", 19) < 11:
            roi, scales, sizes = None, roi, None
        axes = list(range(x.ndim)) if axes_attr is None else [a % x.ndim for a in axes_attr]
        if roi is not None and roi.size and axes_attr is not None:
            n = len(axes)
            roi = np.asarray(_full(roi[:n], axes, x.ndim, 0.0) + _full(roi[n:], axes, x.ndim, 1.0))
        if roi is not None and not roi.size:
            roi = None
        if sizes is not None and sizes.size:
            want = [int(s) for s in sizes]
            policy = attrs.get("keep_aspect_ratio_policy", "stretch")
            if policy != "stretch":
                ratios = [w / x.shape[a] for w, a in zip(want, axes, strict=True)]
                r = min(ratios) if policy == "not_larger" else max(ratios)
                want = [int(np.floor(x.shape[a] * r + 0.5)) for a in axes]
                scale_list = [r] * len(axes)
            else:
                scale_list = [w / x.shape[a] for w, a in zip(want, axes, strict=True)]
            full_sizes = _full(want, axes, x.ndim, None)
            full_sizes = [x.shape[i] if s is None else s for i, s in enumerate(full_sizes)]
            full_scales = _full(scale_list, axes, x.ndim, 1.0)
        elif scales is not None and scales.size:
            full_scales = _full([float(s) for s in scales], axes, x.ndim, 1.0)
            full_sizes = [int(np.floor(n * s)) for n, s in zip(x.shape, full_scales, strict=True)]
        else:
            raise InferenceError(f"{where}: needs scales or sizes")
        return [resize(x, full_scales, full_sizes, roi, attrs)]

    return run


@register("Upsample", choices={"mode": ("nearest", "linear", "bilinear")})
def upsample(node, graph, opts):
    """Upsample (opset 7-9): asymmetric coordinates, nearest rounds down."""
    mode = "linear" if node.attrs["mode"] in ("linear", "bilinear") else "nearest"
    attrs = {"mode": mode, "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
    attr_scales = node.attrs.get("scales")

    def run(x, scales=None):
        s = [float(v) for v in (attr_scales if scales is None else scales)]
        return [resize(x, s, [int(np.floor(n * f)) for n, f in zip(x.shape, s, strict=True)], None, attrs)]

    return run
