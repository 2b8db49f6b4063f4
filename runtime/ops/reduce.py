"""Reduce* (axes as attribute, before opset 13/18, or as input) and ArgMax/ArgMin."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.ops.registry import register


def _extreme(x: np.ndarray, high: bool) -> float | int:
    """Identity element of max (high=False gives the one of min) for the dtype."""
    if x.dtype.kind == "f":
        return -np.inf if not high else np.inf
    info = np.iinfo(x.dtype) if x.dtype.kind in "iu" else None
    return (info.max if high else info.min) if info else (True if high else False)


def _wide(x: np.ndarray) -> np.ndarray:
    """float32 in float64 (the norms are rounded once, as the simulation computes F.normalize's
    norm: quant/float_ops.py); other types as they are."""
    return x.astype(np.float64) if x.dtype == np.float32 else x


def _with_initial(fn: Callable, high: bool) -> Callable:
    return lambda x, axis, keepdims: fn(x, axis=axis, keepdims=keepdims, initial=_extreme(x, high))


_REDUCERS: dict[str, Callable[[np.ndarray, tuple[int, ...], bool], np.ndarray]] = {
    "ReduceSum": lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype),
    "ReduceMean": lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
    "ReduceMax": _with_initial(np.max, high=False),
    "ReduceMin": _with_initial(np.min, high=True),
    "ReduceProd": lambda x, axis, keepdims: np.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype),
    "ReduceL1": lambda x, axis, keepdims: np.sum(np.abs(_wide(x)), axis=axis, keepdims=keepdims),
    "ReduceL2": lambda x, axis, keepdims: np.sqrt(np.sum(np.square(_wide(x)), axis=axis, keepdims=keepdims)),
    "ReduceSumSquare": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims, dtype=x.dtype),
    "ReduceLogSum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "ReduceLogSumExp": lambda x, axis, keepdims: _log_sum_exp(x, axis, keepdims),
}


def _log_sum_exp(x: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    x64 = x.astype(np.float64)
    if x.size == 0:
        return np.log(np.sum(np.exp(x64), axis=axis, keepdims=keepdims))
    m = np.max(x64, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x64 - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


def _reducer(op: str):
    fn = _REDUCERS[op]

    def factory(node, graph, opts):
        keepdims, noop = bool(node.attrs["keepdims"]), node.attrs.get("noop_with_empty_axes", 0)

        def run(x, axes=None):
            axes = node.attrs.get("axes") if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
            if not axes:
                if noop:
                    return [x]
                axes = range(x.ndim)
            with np.errstate(divide="ignore", invalid="ignore"):
                y = fn(x, tuple(int(a) % max(x.ndim, 1) for a in axes), keepdims)
            return [np.asarray(y).astype(x.dtype, copy=False)]

        return run

    return factory


for _op in _REDUCERS:
    register(_op, grid="keeps" if _op in ("ReduceMax", "ReduceMin") else None)(_reducer(_op))


def _arg(fn: Callable):
    def factory(node, graph, opts):
        axis, keepdims, last = node.attrs["axis"], bool(node.attrs["keepdims"]), node.attrs["select_last_index"]

        def run(x):
            if last:
                flipped = np.flip(x, axis)
                idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
            else:
                idx = fn(x, axis=axis)
            idx = idx.astype(np.int64)
            return [np.expand_dims(idx, axis) if keepdims else idx]

        return run

    return factory


register("ArgMax")(_arg(np.argmax))
register("ArgMin")(_arg(np.argmin))
