"""Pads, strides and dilations of ONNX Conv/pool attributes, auto_pad included."""

from __future__ import annotations

from runtime.errors import InferenceError
from runtime.kernels import ConvGeometry


def conv_geometry(attrs: dict, kernel: tuple[int, int], hw: tuple[int, int], where: str) -> ConvGeometry:
    """ConvGeometry of a 2-D window over an input of spatial size hw."""
    strides = tuple(attrs.get("strides", [1, 1]))
    dilations = tuple(attrs.get("dilations", [1, 1]))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if len(strides) != 2 or len(dilations) != 2:
        raise InferenceError(f"{where}: only 2-D windows are supported")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(hw, kernel, strides, dilations, strict=True):
            total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            pads.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        pt_pl_pb_pr = (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
    elif auto_pad == "VALID":
        pt_pl_pb_pr = (0, 0, 0, 0)
    else:
        p = list(attrs.get("pads", [0, 0, 0, 0]))
        if len(p) != 4:
            raise InferenceError(f"{where}: only 2-D windows are supported (pads={p})")
        pt_pl_pb_pr = (p[0], p[1], p[2], p[3])
    return ConvGeometry(tuple(kernel), strides, dilations, pt_pl_pb_pr)
