"""Sliding windows of any spatial rank (1-D, 2-D, 3-D) for the numpy pools and convolutions:
pads from ``pads``/``auto_pad``/``ceil_mode`` as ONNX defines them, and the window taps as
strided views, so every numpy call is one long vectorised pass."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from runtime.errors import InferenceError


@dataclass(frozen=True)
class Window:
    """Kernel, strides, dilations and begin/end pads per spatial dim; ``ceil_pads`` is the part
    of ``end`` that ceil_mode added (it never counts as padding for averages)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    ceil_pads: tuple[int, ...]

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(
            (n + b + e - d * (k - 1) - 1) // s + 1
            for n, b, e, k, s, d in zip(
                spatial, self.begin, self.end, self.kernel, self.strides, self.dilations, strict=True
            )
        )


def window(attrs: dict, kernel: tuple[int, ...], spatial: tuple[int, ...], where: str) -> Window:
    """The Window of an ONNX Conv/pool node over an input of the given spatial shape."""
    rank = len(spatial)
    if len(kernel) != rank:
        raise InferenceError(f"{where}: kernel {list(kernel)} does not match {rank} spatial dims")
    strides = tuple(attrs.get("strides") or [1] * rank)
    dilations = tuple(attrs.get("dilations") or [1] * rank)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if len(strides) != rank or len(dilations) != rank:
        raise InferenceError(f"{where}: strides {list(strides)} / dilations {list(dilations)} need {rank} values")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
            small = total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    elif auto_pad == "VALID":
        begin, end = [0] * rank, [0] * rank
    else:
        pads = list(attrs.get("pads") or [0] * (2 * rank))
        if len(pads) != 2 * rank:
            raise InferenceError(f"{where}: pads {pads} need {2 * rank} values")
        begin, end = pads[:rank], pads[rank:]
    extra = [0] * rank
    if attrs.get("ceil_mode", 0):
        for i, (n, k, s, d) in enumerate(zip(spatial, kernel, strides, dilations, strict=True)):
            span = n + begin[i] + end[i] - d * (k - 1) - 1
            out = -(-span // s) + 1
            if (out - 1) * s >= n + begin[i]:  # the last window would start in the padding only
                out -= 1
            extra[i] = max(0, (out - 1) * s - span)
    return Window(
        tuple(kernel),
        strides,
        dilations,
        tuple(begin),
        tuple(e + x for e, x in zip(end, extra, strict=True)),
        tuple(extra),
    )


def pad(x: np.ndarray, win: Window, fill: float | int, first: int) -> np.ndarray:
    """x padded by the window's pads on the spatial axes first, first+1, ..."""
    if not any(win.begin) and not any(win.end):
        return x
    widths = [(0, 0)] * x.ndim
    for i, (b, e) in enumerate(zip(win.begin, win.end, strict=True)):
        widths[first + i] = (b, e)
    return np.pad(x, widths, constant_values=fill)


def taps(xp: np.ndarray, win: Window, first: int) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """(kernel offset, strided view of the padded input xp) for every kernel tap."""
    rank = len(win.kernel)
    out = [
        (xp.shape[first + i] - win.dilations[i] * (win.kernel[i] - 1) - 1) // win.strides[i] + 1 for i in range(rank)
    ]
    for offset in itertools.product(*(range(k) for k in win.kernel)):
        index = [slice(None)] * xp.ndim
        for i, o in enumerate(offset):
            start = o * win.dilations[i]
            index[first + i] = slice(start, start + win.strides[i] * (out[i] - 1) + 1, win.strides[i])
        yield offset, xp[tuple(index)]
