"""com.microsoft QLinearAdd / QLinearMul, a fused Relu/Clip narrowing the saturation bounds.

QLinearAdd runs in C in ONNX Runtime's fp32 form (pre-divided scale ratios; within one step
of the reference and almost always identical to ORT, see runtime/csrc/qadd.c).  QLinearMul
uses the reference y = Q(DQ(a) * DQ(b))."""

from __future__ import annotations

import numpy as np

from runtime import _kernels, kernels
from runtime.graph import MS_DOMAIN
from runtime.ops.qlinear_matmul import _require_const, _scalar
from runtime.ops.registry import register
from runtime.qmath import clamp_bounds, dequantize, quantize


def _reference(fn, sa, za, sb, zb, sy, zy, lo, hi):
    return lambda a, b: np.clip(
        quantize(fn(dequantize(a, sa, za), dequantize(b, sb, zb)), sy, zy), lo, hi
    ).astype(zy.dtype)


def _factory(fn, in_c: bool):
    def factory(node, graph, opts):
        sa, za, sb, zb, sy, zy = _require_const(node, graph, [1, 2, 4, 5, 6, 7], "quantization parameter")
        zy = np.asarray(zy if zy is not None else np.uint8(0))
        lo, hi = clamp_bounds(sy, zy, node.attrs.get("fused_min"), node.attrs.get("fused_max"))
        if in_c:
            params = kernels.AddParams.from_scales(
                _scalar(sa),
                int(_scalar(za)),
                _scalar(sb),
                int(_scalar(zb)),
                _scalar(sy),
                int(_scalar(zy)),
                lo,
                hi,
            )
            uint8_args = (float(params.ratio_a), float(params.ratio_b), float(params.offset), lo, hi, 0,
                          kernels.resolve_path(opts.isa))

            def run(a, _sa, _za, b, *_):
                # Equal-shape contiguous uint8 operands (residual adds) go straight to C with the
                # arguments made here; anything else through kernels.qadd's checks and broadcasting.
                if (a.shape == b.shape and a.dtype == b.dtype == np.uint8
                        and a.flags.c_contiguous and b.flags.c_contiguous):
                    out = np.empty_like(a)
                    kernels.call(_kernels.qadd, a, b, out, out.size, *uint8_args)
                    return [out]
                return [kernels.qadd(a, b, params, opts.isa)]

            return run
        compute = _reference(fn, sa, za, sb, zb, sy, zy, lo, hi)
        return lambda a, _sa, _za, b, *_: [compute(a, b)]

    return factory


register("QLinearAdd", domain=MS_DOMAIN)(_factory(np.add, in_c=True))
register("QLinearMul", domain=MS_DOMAIN)(_factory(np.multiply, in_c=False))
