"""Window taps of 2-D convolutions and pools as strided views, shared by the numpy kernels.

Iterating over the kh*kw taps (each a strided view of the padded input) keeps every numpy
call a long vectorised pass, in NCHW or NHWC alike."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from runtime.kernels import ConvGeometry


def ceil_mode_pads(geom: ConvGeometry, hw: tuple[int, int]) -> ConvGeometry:
    """Extends bottom/right pads so the floor formula yields the ceil_mode output size."""
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.strides, geom.dilations
    pt, pl, pb, pr = geom.pads
    extra = []
    for size, k, s, d, a, b in ((hw[0], kh, sh, dh, pt, pb), (hw[1], kw, sw, dw, pl, pr)):
        span = size + a + b - d * (k - 1) - 1
        out = -(-span // s) + 1
        if (out - 1) * s >= size + a:  # the last window would start in the padding only
            out -= 1
        extra.append(max(0, (out - 1) * s - span))
    return ConvGeometry(geom.kernel, geom.strides, geom.dilations, (pt, pl, pb + extra[0], pr + extra[1]))


def pad_spatial(x: np.ndarray, geom: ConvGeometry, fill: float | int, axes: tuple[int, int]) -> np.ndarray:
    pt, pl, pb, pr = geom.pads
    if not any(geom.pads):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axes[0]], widths[axes[1]] = (pt, pb), (pl, pr)
    return np.pad(x, widths, constant_values=fill)


def taps(xp: np.ndarray, geom: ConvGeometry, axes: tuple[int, int]) -> Iterator[np.ndarray]:
    """Yields, for each (ky, kx), the strided view of padded input xp that tap reads."""
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.strides, geom.dilations
    oh = (xp.shape[axes[0]] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[axes[1]] - dw * (kw - 1) - 1) // sw + 1
    for ky in range(kh):
        for kx in range(kw):
            index = [slice(None)] * xp.ndim
            index[axes[0]] = slice(ky * dh, ky * dh + sh * (oh - 1) + 1, sh)
            index[axes[1]] = slice(kx * dw, kx * dw + sw * (ow - 1) + 1, sw)
            yield xp[tuple(index)]
