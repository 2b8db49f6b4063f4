"""fp32 Conv of any spatial rank and ConvTranspose in numpy: one BLAS product per kernel tap
(a tap is a strided view of the padded input, so no im2col buffer is materialised).

The 2-D Conv keeps its own path in conv.py; this module serves 1-D and 3-D convolutions and
every ConvTranspose."""

from __future__ import annotations

import numpy as np

from runtime.errors import InferenceError
from runtime.ops.registry import register
from runtime.ops.window_nd import pad, taps, window


def conv_nd(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict, where: str) -> np.ndarray:
    """ONNX Conv: x (N, C, *S), w (M, C/group, *K), groups, strides, dilations, pads/auto_pad."""
    if x.ndim != w.ndim or x.ndim < 3:
        raise InferenceError(f"{where}: input {x.shape} and weight {w.shape} ranks do not match")
    group = int(attrs.get("group", 1))
    m, cin_g = w.shape[:2]
    if x.shape[1] != cin_g * group or m % group:
        raise InferenceError(f"{where}: {x.shape[1]} input channels do not fit weight {w.shape} in {group} groups")
    win = window(attrs, w.shape[2:], x.shape[2:], where)
    out_type = x.dtype
    if x.dtype == np.float16:  # accumulate half precision in float32, as ONNX's reference does
        x, w = x.astype(np.float32), w.astype(np.float32)
        b = None if b is None else b.astype(np.float32)
    xp = pad(x, win, 0, 2)
    if group == 1:
        acc = None
        for offset, view in taps(xp, win, 2):
            term = np.tensordot(w[(slice(None), slice(None), *offset)], view, axes=([1], [1]))  # (M, N, *O)
            acc = term if acc is None else acc + term
        y = np.moveaxis(acc, 0, 1)
    else:  # all groups in one einsum per tap: (N, G, C/G, *O) x (G, M/G, C/G) -> (N, G, M/G, *O)
        xg = xp.reshape(x.shape[0], group, cin_g, *xp.shape[2:])
        wg = w.reshape(group, m // group, cin_g, *w.shape[2:])
        acc = None
        for offset, view in taps(xg, win, 3):
            term = np.einsum("ngc...,gmc->ngm...", view, wg[(slice(None), slice(None), slice(None), *offset)])
            acc = term if acc is None else acc + term
        y = acc.reshape(x.shape[0], m, *acc.shape[3:])
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * (x.ndim - 2)))
    return np.ascontiguousarray(y).astype(out_type, copy=False)


def _transpose_pads(attrs: dict, spatial, kernel, where: str) -> tuple[list[int], list[int], list[int]]:
    """(begin pads, end pads, output spatial shape) of a ConvTranspose, as the ONNX spec derives them."""
    rank = len(spatial)
    strides = list(attrs.get("strides") or [1] * rank)
    dilations = list(attrs.get("dilations") or [1] * rank)
    out_pad = list(attrs.get("output_padding") or [0] * rank)
    full = [
        s * (n - 1) + op + (k - 1) * d + 1
        for s, n, op, k, d in zip(strides, spatial, out_pad, kernel, dilations, strict=True)
    ]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    shape = attrs.get("output_shape")
    if shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = [n * s for n, s in zip(spatial, strides, strict=True)]
    if shape is not None:
        shape = list(shape)[-rank:]
        total = [f - o for f, o in zip(full, shape, strict=True)]
        if auto_pad == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        return begin, [t - b for t, b in zip(total, begin, strict=True)], shape
    pads = list(attrs.get("pads") or [0] * (2 * rank))
    if auto_pad == "VALID" or len(pads) != 2 * rank:
        pads = [0] * (2 * rank)
    begin, end = pads[:rank], pads[rank:]
    return begin, end, [f - b - e for f, b, e in zip(full, begin, end, strict=True)]


@register("ConvTranspose")
def conv_transpose(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"
    attrs, group = node.attrs, int(node.attrs["group"])

    def run(x, w, b=None):
        if x.ndim != w.ndim or x.ndim < 3 or x.shape[1] != w.shape[0] or w.shape[0] % group:
            raise InferenceError(f"{where}: input {x.shape} does not fit weight {w.shape} in {group} groups")
        spatial, kernel = x.shape[2:], w.shape[2:]
        rank = len(spatial)
        strides = list(attrs.get("strides") or [1] * rank)
        dilations = list(attrs.get("dilations") or [1] * rank)
        begin, _, shape = _transpose_pads(attrs, spatial, kernel, where)
        cin_g, per = w.shape[0] // group, w.shape[1]
        lengths = [
            s * (n - 1) + (k - 1) * d + 1 for s, n, k, d in zip(strides, spatial, kernel, dilations, strict=True)
        ]
        size = [max(ln, b + o) for ln, b, o in zip(lengths, begin, shape, strict=True)]
        full = np.zeros((x.shape[0], per * group, *size), np.float64 if x.dtype == np.float64 else np.float32)
        for g in range(group):
            xg, wg = x[:, g * cin_g : (g + 1) * cin_g], w[g * cin_g : (g + 1) * cin_g]
            for offset in np.ndindex(*kernel):
                term = np.tensordot(xg, wg[(slice(None), slice(None), *offset)], axes=([1], [0]))  # (N, *S, per)
                index = [slice(None), slice(g * per, (g + 1) * per)]
                index += [
                    slice(o * d, o * d + s * (n - 1) + 1, s)
                    for o, d, s, n in zip(offset, dilations, strides, spatial, strict=True)
                ]
                full[tuple(index)] += np.moveaxis(term, -1, 1)
        crop = full[(slice(None), slice(None), *(slice(bg, bg + o) for bg, o in zip(begin, shape, strict=True)))]
        if any(bg < 0 for bg in begin):
            raise InferenceError(f"{where}: output_shape {shape} is larger than the transposed convolution yields")
        if b is not None:
            crop = crop + b.reshape(1, -1, *([1] * rank))
        return [crop.astype(x.dtype)]

    return run
