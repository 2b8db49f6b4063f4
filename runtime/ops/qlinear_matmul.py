"""Integer matrix products: QLinearMatMul and com.microsoft QGemm (MatMulInteger: matmul_integer.py).

With constant weights the product goes through the C GEMM, weights centred on their zero
point and packed once here; a product of two run-time tensors falls back to an exact int64
numpy product followed by the same fp32 requantization."""

from __future__ import annotations

import numpy as np

from runtime import kernels
from runtime.errors import InferenceError
from runtime.graph import MS_DOMAIN
from runtime.ops import qlinear_reference
from runtime.ops.registry import register
from runtime.qmath import centered_weights, clamp_bounds, requant_multiplier


class PackedMatMul:
    """y = stage(A @ W^T) for A (M, K) quantized activations and constant W (N, K).

    ``x_zero_point`` is in the activation's own type; int8 activations are shifted to uint8
    at run time and the column-sum correction below is computed for the shifted zero point."""

    def __init__(
        self,
        w_nk: np.ndarray,
        x_zero_point: int,
        x_signed: bool,
        bias: np.ndarray | None,
        multiplier: np.ndarray | None,
        y_zero_point: int,
        lo: int,
        hi: int,
        out_dtype: type,
        opts,
    ) -> None:
        n = w_nk.shape[0]
        self.x_signed = x_signed
        zx = x_zero_point + (128 if x_signed else 0)
        bias = np.zeros(n, np.int64) if bias is None else np.broadcast_to(bias.astype(np.int64), (n,))
        corrected = bias - zx * w_nk.astype(np.int64).sum(axis=1)
        if np.abs(corrected).max(initial=0) >= 2**31:
            raise InferenceError("bias minus the zero-point correction overflows int32")
        self.packed = kernels.pack_weights(w_nk)
        self.stage = kernels.OutputStage(
            corrected.astype(np.int32), multiplier, y_zero_point, lo, hi, out_dtype
        )
        self.opts = opts

    def __call__(self, a2d: np.ndarray) -> np.ndarray:
        if self.x_signed:
            a2d = a2d.view(np.uint8) ^ np.uint8(0x80)
        return kernels.gemm(a2d, self.packed, self.stage, self.opts.threads, self.opts.isa)


def _scalar(v: np.ndarray | None, default: float = 0) -> float | int:
    return default if v is None else np.asarray(v).reshape(-1)[0].item()


def _require_const(node, graph, indices: list[int], what: str) -> list[np.ndarray | None]:
    values = []
    for i in indices:
        name = node.inputs[i] if i < len(node.inputs) else ""
        value = graph.const(name)
        if name and value is None:
            raise InferenceError(
                f"{graph.source}: {node.describe()} needs a constant {what} (input {i} {name!r})"
            )
        values.append(value)
    return values


def _reference(a, za, b, zb, bias) -> np.ndarray:
    """Exact integer product of two run-time tensors (attention's QKᵀ and PV).  Through float64
    BLAS when every partial sum is an integer below 2**53 (K * max|a - za| * max|b - zb|: always
    for 8-bit operands and any realistic K, and ~5x faster than numpy's int64 loop), else int64."""
    ac, bc = a.astype(np.int64) - za, b.astype(np.int64) - zb
    k = a.shape[-1]
    bound = k * int(np.abs(ac).max(initial=0)) * int(np.abs(bc).max(initial=0))
    if bound < 2**53:
        acc = np.rint(np.matmul(ac.astype(np.float64), bc.astype(np.float64))).astype(np.int64)
    else:
        acc = np.matmul(ac, bc)
    return acc if bias is None else acc + bias.astype(np.int64)


def _requantize(acc: np.ndarray, multiplier: np.ndarray, zy: int, lo: int, hi: int, dtype) -> np.ndarray:
    f = acc.astype(np.float32) * multiplier
    return (np.clip(np.rint(np.clip(f, lo - zy, hi - zy)), lo - zy, hi - zy) + zy).astype(dtype)


def _matmul_kernel(node, graph, opts, w, zx, x_signed, w_zp, bias, mult, zy, lo, hi, dtype):
    """Compute function for A (..., K) @ B: C GEMM when B is constant, numpy otherwise."""
    if w is not None:
        if w.ndim != 2:
            raise InferenceError(f"{graph.source}: {node.describe()}: constant B must be 2-D, got {w.shape}")
        wc = centered_weights(w, w_zp, axis=1, where=f"{graph.source}: {node.describe()}")
        mm = PackedMatMul(np.ascontiguousarray(wc.T), zx, x_signed, bias, mult, zy, lo, hi, dtype, opts)

        def run_packed(a: np.ndarray) -> np.ndarray:
            out = mm(a.reshape(-1, a.shape[-1]))
            return out.reshape(*a.shape[:-1], out.shape[-1])

        return run_packed

    def run_dynamic(a: np.ndarray, b: np.ndarray, b_zp) -> np.ndarray:
        acc = _reference(a, zx, b, 0 if b_zp is None else np.asarray(b_zp).astype(np.int64), bias)
        return acc.astype(np.int32) if mult is None else _requantize(acc, mult, zy, lo, hi, dtype)

    return run_dynamic


@register("QLinearMatMul")
def qlinear_matmul(node, graph, opts):
    if not qlinear_reference.fits_c_kernels(graph, node, [1, 2, 3, 4, 5, 6, 7], 3, 5):
        return qlinear_reference.qlinear_matmul(node, graph, opts)
    xs, xz, ws, ys, yz = _require_const(node, graph, [1, 2, 4, 6, 7], "quantization parameter")
    w, wz = graph.const(node.inputs[3]), graph.const(node.inputs[5])
    n = 1 if w is None else w.shape[-1]
    mult = requant_multiplier(xs, ws, ys, n) if w is not None or np.size(ws) == 1 else None
    if mult is None:
        raise InferenceError(f"{graph.source}: {node.describe()}: per-column scales need a constant B")
    lo, hi = clamp_bounds(ys, yz, node.attrs.get("fused_min"), node.attrs.get("fused_max"))
    kernel = _matmul_kernel(
        node,
        graph,
        opts,
        w,
        int(_scalar(xz)),
        xz.dtype == np.int8,
        wz,
        None,
        mult,
        int(_scalar(yz)),
        lo,
        hi,
        yz.dtype,
    )
    if w is not None:
        return lambda a, *_: [kernel(a)]
    return lambda a, _xs, _xz, b, _ws, b_zp, *_: [kernel(a, b, b_zp)]


@register("QGemm", domain=MS_DOMAIN)
def qgemm(node, graph, opts):
    """com.microsoft QGemm: Y = alpha * A' @ B' + C, requantized when y_scale is given, else fp32."""
    xs, xz, w, ws, wz = _require_const(node, graph, [1, 2, 3, 4, 5], "operand")
    c, ys, yz = (
        _require_const(node, graph, [i], "operand")[0] if i < len(node.inputs) else None for i in (6, 7, 8)
    )
    trans_a, alpha = node.attrs.get("transA", 0), float(node.attrs.get("alpha", 1.0))
    w_kn = w.T if node.attrs.get("transB", 0) else w
    n = w_kn.shape[1]
    x_signed = xz.dtype == np.int8
    if ys is not None:
        scale = (requant_multiplier(xs, ws, ys, n) * np.float32(alpha)).astype(np.float32)
        lo, hi = clamp_bounds(ys, yz, node.attrs.get("fused_min"), node.attrs.get("fused_max"))
        kernel = _matmul_kernel(
            node,
            graph,
            opts,
            w_kn,
            int(_scalar(xz)),
            x_signed,
            wz,
            c,
            scale,
            int(_scalar(yz)),
            lo,
            hi,
            yz.dtype,
        )
        return lambda a, *_: [kernel(a.T if trans_a else a)]
    out_scale = (
        np.float32(_scalar(xs))
        * np.broadcast_to(np.asarray(ws, np.float32).reshape(-1), (n,))
        * np.float32(alpha)
    ).astype(np.float32)
    kernel = _matmul_kernel(
        node, graph, opts, w_kn, int(_scalar(xz)), x_signed, wz, c, None, 0, 0, 0, np.int32
    )
    return lambda a, *_: [(kernel(a.T if trans_a else a).astype(np.float32) * out_scale).astype(np.float32)]
