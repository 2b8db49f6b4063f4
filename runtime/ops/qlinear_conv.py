"""QLinearConv and ConvInteger on the C kernels.

Weights are centred on their zero point and packed once at load: a (Cout, kh*kw*Cin)
matrix in (ky, kx, cin) order for the im2col GEMM, or (kh, kw, C) prepared for the depthwise
kernels (kernels.pack_depthwise), or one pack per group otherwise.  The kernels work in NHWC;
a node the layout pass marked ``channels_last`` already receives and returns NHWC, any other
transposes around the call."""

from __future__ import annotations

import numpy as np

from runtime import _kernels, kernels
from runtime.errors import InferenceError
from runtime.ops import qlinear_reference
from runtime.ops.conv_geometry import conv_geometry
from runtime.ops.qlinear_matmul import _require_const, _scalar
from runtime.ops.registry import register
from runtime.qmath import as_uint8_activation, centered_weights, clamp_bounds, requant_multiplier


def contiguous_nhwc(x: np.ndarray) -> np.ndarray:
    """x as a C-contiguous array.  A channels-last view of a contiguous NCHW tensor with few
    channels (the stem after the layout pass's Transpose) is copied one channel plane at a
    time: numpy's own copy would walk the source a byte at a time, 4x slower at 224x224x3."""
    if x.ndim == 4 and x.shape[3] <= 4 and x.transpose(0, 3, 1, 2).flags.c_contiguous:
        out = np.empty(x.shape, x.dtype)
        for i in range(x.shape[3]):
            out[..., i] = x[..., i]
        return out
    return np.ascontiguousarray(x)


class QConv:
    """One quantized 2-D convolution with everything that does not depend on the input precomputed."""

    def __init__(self, node, graph, opts, w, w_zp, x_zp, bias, mult, y_zp, lo, hi, out_dtype):
        where = f"{graph.source}: {node.describe()}"
        if w.ndim != 4:
            raise InferenceError(f"{where}: only 2-D convolutions are supported (weight shape {w.shape})")
        self.where, self.opts, self.attrs = where, opts, node.attrs
        self.geometries: dict[tuple[int, int], kernels.ConvGeometry] = {}  # per input size, made once
        # Per input shape, the whole C call but the input and output arrays (see run()).
        self.plans: dict[tuple[int, ...], tuple] = {}
        self.channels_last = bool(node.attrs.get("channels_last", 0))
        self.group = int(node.attrs.get("group", 1))
        cout, cin_g, kh, kw = w.shape
        if cout % self.group:
            raise InferenceError(f"{where}: {cout} output channels do not split into {self.group} groups")
        self.kernel = (kh, kw)
        self.cin = cin_g * self.group
        wc = centered_weights(w, w_zp, axis=0, where=where)
        self.x_signed = np.asarray(x_zp).dtype == np.int8
        self.zx = int(_scalar(x_zp)) + (128 if self.x_signed else 0)
        bias = np.zeros(cout, np.int32) if bias is None else bias.astype(np.int32)
        mult = None if mult is None else np.asarray(mult, np.float32)
        self.depthwise = self.group == self.cin and cin_g == 1 and cout == self.cin
        if self.depthwise:
            self.dw_weights = kernels.pack_depthwise(wc.reshape(cout, kh, kw).transpose(1, 2, 0))
            self.stage = kernels.OutputStage(bias, mult, y_zp, lo, hi, out_dtype)
            return
        per = cout // self.group
        self.groups = []
        for g in range(self.group):
            wg = np.ascontiguousarray(wc[g * per : (g + 1) * per].transpose(0, 2, 3, 1).reshape(per, -1))
            colsum = wg.astype(np.int64).sum(axis=1)
            b = bias[g * per : (g + 1) * per].astype(np.int64) - self.zx * colsum
            if np.abs(b).max(initial=0) >= 2**31:
                raise InferenceError(f"{where}: bias minus the zero-point correction overflows int32")
            m = None if mult is None else mult[g * per : (g + 1) * per]
            self.groups.append(
                (
                    kernels.pack_weights(wg),
                    kernels.OutputStage(b.astype(np.int32), m, y_zp, lo, hi, out_dtype),
                )
            )

    def run(self, x: np.ndarray, *_: object) -> list[np.ndarray]:
        """The node's compute: a channels-last uint8 input of a shape seen before goes straight to
        the C kernel with every other argument prepared (the kernel still checks every size);
        anything else takes the general path (__call__), which makes the plan."""
        if x.dtype == np.uint8 and not x.flags.c_contiguous:
            x = contiguous_nhwc(x)
        plan = self.plans.get(x.shape) if x.dtype == np.uint8 and x.flags.c_contiguous else None
        if plan is None:
            return [self(x)]
        fn, head, tail, out_shape, out_dtype = plan
        out = np.empty(out_shape, out_dtype)
        try:
            fn(x, *head, out, *tail)
        except (ValueError, OverflowError, TypeError) as exc:
            raise InferenceError(f"{self.where}: kernel {fn.__name__}: {exc}") from exc
        except MemoryError as exc:
            raise InferenceError(f"{self.where}: kernel {fn.__name__}: out of memory") from exc
        return [out]

    def _plan(self, shape: tuple[int, ...], geom: kernels.ConvGeometry) -> None:
        """Prepares run()'s call for a channels-last input of this shape (one group only)."""
        if not self.channels_last or (not self.depthwise and len(self.groups) != 1):
            return
        t, pid = self.opts.threads, kernels.resolve_path(self.opts.isa)
        b, h, w, c = shape
        oh, ow = geom.output_hw(h, w)
        if self.depthwise:
            fn, weights, stage, n = _kernels.qdepthwise, self.dw_weights, self.stage, c
        else:
            (weights, stage), n = self.groups[0], self.groups[0][0].n
            fn = _kernels.qconv
        bias, mult, zy, lo, hi = stage.args()
        head = (b, h, w, c, weights, *geom.args(), self.zx, bias, mult, zy, lo, hi)
        out_shape = (b, max(oh, 0), max(ow, 0), n)
        self.plans[shape] = (fn, head, (t, pid), out_shape, stage.empty((0,)).dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4:
            raise InferenceError(f"{self.where}: expected a 4-D input, got shape {x.shape}")
        if not self.channels_last:
            x = x.transpose(0, 2, 3, 1)
        if x.shape[3] != self.cin:
            raise InferenceError(f"{self.where}: input has {x.shape[3]} channels, weights expect {self.cin}")
        x, _ = as_uint8_activation(x, 0)
        geom = self.geometries.get(x.shape[1:3])
        if geom is None:
            geom = self.geometries[x.shape[1:3]] = conv_geometry(self.attrs, self.kernel, x.shape[1:3], self.where)
        if x.shape not in self.plans:
            self._plan(x.shape, geom)
        t, isa = self.opts.threads, self.opts.isa
        if self.depthwise:
            y = kernels.depthwise_nhwc(x, self.dw_weights, geom, self.zx, self.stage, t, isa)
        elif len(self.groups) == 1:
            y = kernels.conv_nhwc(x, self.groups[0][0], geom, self.zx, self.groups[0][1], t, isa)
        else:
            per = self.cin // self.group
            y = np.concatenate(
                [
                    kernels.conv_nhwc(x[..., g * per : (g + 1) * per], packed, geom, self.zx, stage, t, isa)
                    for g, (packed, stage) in enumerate(self.groups)
                ],
                axis=3,
            )
        return y if self.channels_last else y.transpose(0, 3, 1, 2)


@register("QLinearConv")
def qlinear_conv(node, graph, opts):
    if not qlinear_reference.fits_c_kernels(graph, node, list(range(1, 9)), 3, 5, rank=4):
        return qlinear_reference.qlinear_conv(node, graph, opts)
    xs, xz, w, ws, wz, ys, yz = _require_const(node, graph, range(1, 8), "weight or quantization parameter")
    bias = _require_const(node, graph, [8], "bias")[0] if len(node.inputs) > 8 else None
    mult = requant_multiplier(xs, ws, ys, w.shape[0])
    lo, hi = clamp_bounds(ys, yz, node.attrs.get("fused_min"), node.attrs.get("fused_max"))
    conv = QConv(node, graph, opts, w, wz, xz, bias, mult, int(_scalar(yz)), lo, hi, yz.dtype)
    return conv.run


@register("ConvInteger")
def conv_integer(node, graph, opts):
    if not qlinear_reference.fits_c_kernels(graph, node, [1, 2, 3], 1, 3, rank=4):
        return qlinear_reference.conv_integer_op(node, graph, opts)
    inputs = node.inputs + [""] * (4 - len(node.inputs))
    w = graph.const(inputs[1])
    xz = graph.const(inputs[2]) if inputs[2] else np.uint8(0)
    wz = graph.const(inputs[3]) if inputs[3] else None
    if w is None or xz is None or (inputs[3] and wz is None):
        raise InferenceError(f"{graph.source}: {node.describe()} needs constant weights and zero points")
    conv = QConv(node, graph, opts, w, wz, np.asarray(xz), None, None, 0, 0, 0, np.int32)
    return conv.run
