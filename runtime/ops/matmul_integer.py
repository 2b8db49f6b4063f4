"""DynamicQuantizeLinear and MatMulInteger: the dynamic int8 path (ONNX's standard form).

DynamicQuantizeLinear follows the ONNX definition (range widened to include 0, scale
(max - min)/255, zero point rounded half to even and saturated); a tensor of zeros gets
scale 1 as in ONNX Runtime.  MatMulInteger with a constant B runs on the C GEMM with the
weights packed once; its activation zero point may be a run-time value (the output of
DynamicQuantizeLinear), so the ``z_x · column_sum(B)`` correction is applied after the
GEMM when it is not a constant.  Everything is exact integer arithmetic.
"""

from __future__ import annotations

import numpy as np

from runtime import kernels
from runtime.errors import InferenceError
from runtime.ops.registry import register
from runtime.qmath import centered_weights


def dynamic_quantize(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """DynamicQuantizeLinear over the whole tensor: (uint8 codes, fp32 scale, uint8 zero point).
    Shared with the quantized recurrences (rnn.py), which quantize their inputs the same way."""
    x = np.asarray(x, np.float32)
    lo = np.float32(min(0.0, float(x.min(initial=0.0))))
    hi = np.float32(max(0.0, float(x.max(initial=0.0))))
    scale = np.float32((hi - lo) / np.float32(255))
    if not scale > 0:
        scale = np.float32(1.0)
    zero = np.float32(np.clip(np.rint((np.float32(0) - lo) / scale), 0, 255))
    q = np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8)
    return q, scale, np.uint8(zero)


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(node, graph, opts):
    def run(x):
        q, scale, zero = dynamic_quantize(x)
        return [q, np.asarray(scale, np.float32), np.asarray(zero, np.uint8)]

    return run


class ConstantInt8Product:
    """``(a - z_a) · W`` for a constant int8 W (K, N) on the C GEMM: W packed once at load, a
    scalar uint8 zero point's ``-z_a · column_sum(W)`` carried by the output stage's bias.
    Exact int32 accumulators (the depth is checked against int32 overflow at construction)."""

    def __init__(self, w_kn: np.ndarray, where: str) -> None:
        w_nk = np.ascontiguousarray(np.asarray(w_kn, np.int8).T)
        self.where, self.n, self.k = where, w_nk.shape[0], w_nk.shape[1]
        self.packed = kernels.pack_weights(w_nk)
        self.col_sums = w_nk.astype(np.int64).sum(axis=1)
        if np.abs(self.col_sums).max(initial=0) * 255 >= 2**31:
            raise InferenceError(f"{where}: K={self.k} is too deep for int32 accumulators")

    def __call__(self, a: np.ndarray, za: int, threads: int, isa: str | None) -> np.ndarray:
        """(..., K) uint8 codes with one zero point -> (..., N) int32."""
        if a.shape[-1] != self.k:
            raise InferenceError(f"{self.where}: input has {a.shape[-1]} features, the weights {self.k} rows")
        stage = kernels.OutputStage((-int(za) * self.col_sums).astype(np.int32), None)
        acc = kernels.gemm(a.reshape(-1, self.k), self.packed, stage, threads, isa)
        return acc.reshape(*a.shape[:-1], self.n)


def _as_u8(a: np.ndarray) -> tuple[np.ndarray, int]:
    """uint8 operand and the shift applied to its zero point (int8 -> uint8 flips the sign bit)."""
    if a.dtype == np.uint8:
        return a, 0
    if a.dtype == np.int8:
        return a.view(np.uint8) ^ np.uint8(0x80), 128
    raise InferenceError(f"MatMulInteger input must be uint8 or int8, got {a.dtype}")


def _row_zero_points(a_zp, rows: int, shift: int) -> np.ndarray | int:
    if a_zp is None:
        return shift
    z = np.asarray(a_zp).astype(np.int64).reshape(-1)
    if z.size == 1:
        return int(z[0]) + shift
    if z.size != rows:
        raise InferenceError(f"a_zero_point has {z.size} values for {rows} rows")
    return z + shift


@register("MatMulInteger")
def matmul_integer(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"
    w = graph.const(node.inputs[1])
    b_zp = graph.const(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if w is None or w.ndim != 2:
        def run_dynamic(a, b, a_zp=None, bzp=None):
            za = 0 if a_zp is None else np.asarray(a_zp).astype(np.int64)
            zb = 0 if bzp is None else np.asarray(bzp).astype(np.int64)
            if np.ndim(za) == 1 and a.ndim == 2:
                za = za[:, None]
            return [np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - zb).astype(np.int32)]

        return run_dynamic
    if len(node.inputs) > 3 and node.inputs[3] and b_zp is None:
        raise InferenceError(f"{where}: b_zero_point must be a constant when B is")
    prod = ConstantInt8Product(centered_weights(w, b_zp, axis=1, where=where), where)  # (K, N) int8
    zero_stage = kernels.OutputStage(np.zeros(prod.n, np.int32), None)

    def run(a, _b=None, a_zp=None, _bzp=None):
        if a.shape[-1] != prod.k:
            raise InferenceError(f"{where}: input has {a.shape[-1]} features, B has {prod.k} rows")
        a2, shift = _as_u8(a.reshape(-1, a.shape[-1]))
        za = _row_zero_points(a_zp, a2.shape[0], shift)
        if isinstance(za, np.ndarray):  # per-row zero points: correct after the GEMM
            acc = kernels.gemm(a2, prod.packed, zero_stage, opts.threads, opts.isa).astype(np.int64)
            acc = (acc - za[:, None] * prod.col_sums[None, :]).astype(np.int32)
        else:  # one zero point: its correction is the output stage's bias, added inside the GEMM
            acc = prod(a2, za, opts.threads, opts.isa)
        return [acc.reshape(*a.shape[:-1], prod.n)]

    return run
