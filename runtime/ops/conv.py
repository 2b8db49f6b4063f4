"""fp32 Conv (2-D, any group) in numpy: one tensordot (BLAS) per window tap."""

from __future__ import annotations

import numpy as np

from runtime.errors import InferenceError
from runtime.ops.conv_geometry import conv_geometry
from runtime.ops.conv_nd import conv_nd
from runtime.ops.registry import QdqFold, register
from runtime.ops.windows import pad_spatial, taps


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, attrs: dict, where: str) -> np.ndarray:
    if x.ndim != 4 or w.ndim != 4:
        raise InferenceError(
            f"{where}: only 2-D convolutions are supported (input {x.shape}, weight {w.shape})"
        )
    group = int(attrs.get("group", 1))
    geom = conv_geometry(attrs, w.shape[2:], x.shape[2:], where)
    xp = pad_spatial(x, geom, 0.0, (2, 3))
    cout, cin_g, kh, kw = w.shape
    per = cout // group
    outs = []
    for g in range(group):
        xg = xp[:, g * cin_g : (g + 1) * cin_g]
        wg = w[g * per : (g + 1) * per]
        acc = None
        for t, view in enumerate(taps(xg, geom, (2, 3))):
            term = np.tensordot(view, wg[:, :, t // kw, t % kw], axes=([1], [1]))  # N, OH, OW, per
            acc = term if acc is None else acc + term
        outs.append(acc)
    y = np.concatenate(outs, axis=-1) if group > 1 else outs[0]
    if b is not None:
        y = y + b
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)).astype(x.dtype, copy=False)


@register("Conv", fuses_clamp=True, fold=QdqFold("conv", ("", "QLinearConv")))
def conv(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"
    return lambda x, w, b=None: [
        conv2d(x, w, b, node.attrs, where)
        if x.ndim == 4 and node.attrs["group"] == 1
        else conv_nd(x, w, b, node.attrs, where)  # other ranks; groups in one einsum per tap
    ]
