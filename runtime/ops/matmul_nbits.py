"""com.microsoft MatMulNBits: Y = A @ dequant(B)ᵀ + bias with 4- or 8-bit block-wise weights.

The layout is ONNX Runtime's: B (N, ceil(K/block), block·bits/8) uint8 with two 4-bit codes
a byte (low nibble first), scales (N·blocks) or (N, blocks) in A's float type, zero points
packed the same way as B (default 2^(bits-1)) or given as floats.  The codes stay packed;
the C kernel (runtime/csrc/woq_gemm.c) unpacks one tile of columns at a time into its GEMM.
"""

from __future__ import annotations

import numpy as np

from runtime import _woq
from runtime.errors import InferenceError
from runtime.graph import MS_DOMAIN
from runtime.ops.registry import register

SUPPORTED_BITS = (4, 8)


def unpack_zero_points(zp: np.ndarray | None, n: int, blocks: int, bits: int) -> np.ndarray:
    """Per-block zero points as fp32 (N·blocks,) from ORT's packed uint8 or float form."""
    if zp is None:
        return np.full(n * blocks, 2 ** (bits - 1), np.float32)
    if zp.dtype != np.uint8:
        return np.ascontiguousarray(zp, np.float32).reshape(-1)
    per_row = (blocks * bits + 7) // 8
    rows = zp.reshape(n, per_row)
    if bits == 8:
        return rows.astype(np.float32).reshape(-1)
    nibbles = np.stack([rows & 0x0F, rows >> 4], axis=-1).reshape(n, -1)[:, :blocks]
    return nibbles.astype(np.float32).reshape(-1)


@register("MatMulNBits", domain=MS_DOMAIN)
def matmul_nbits(node, graph, opts):
    where = f"{graph.source}: {node.describe()}"
    k, n = int(node.attrs["K"]), int(node.attrs["N"])
    bits, block = int(node.attrs.get("bits", 4)), int(node.attrs["block_size"])
    if bits not in SUPPORTED_BITS:
        raise InferenceError(f"{where}: bits={bits} is not supported; the runtime runs {SUPPORTED_BITS}")
    if len(node.inputs) > 4 and node.inputs[4]:
        raise InferenceError(f"{where}: g_idx (act-order GPTQ) is not supported")
    consts = [graph.const(node.inputs[i]) if i < len(node.inputs) else None for i in range(6)]
    for i, what in ((1, "B"), (2, "scales"), (3, "zero_points"), (5, "bias")):
        if i < len(node.inputs) and node.inputs[i] and consts[i] is None:
            raise InferenceError(f"{where}: {what} must be a constant")
    blocks = (k + block - 1) // block
    b = np.ascontiguousarray(consts[1], np.uint8)
    if b.size != n * blocks * block * bits // 8:
        raise InferenceError(f"{where}: B has {b.size} bytes, K={k} N={n} block_size={block} need "
                             f"{n * blocks * block * bits // 8}")
    scales = np.ascontiguousarray(consts[2], np.float32).reshape(-1)
    if scales.size != n * blocks:
        raise InferenceError(f"{where}: scales hold {scales.size} values, expected N*blocks={n * blocks}")
    zeros = unpack_zero_points(consts[3], n, blocks, bits)
    if zeros.size != n * blocks:
        raise InferenceError(f"{where}: zero_points hold {zeros.size} values, expected {n * blocks}")
    bias = None if consts[5] is None else np.ascontiguousarray(consts[5], np.float32).reshape(-1)
    if bias is not None and bias.size != n:
        raise InferenceError(f"{where}: bias has {bias.size} values, expected N={n}")

    def run(a, *_):
        if a.shape[-1] != k:
            raise InferenceError(f"{where}: input has {a.shape[-1]} features, K={k}")
        a2 = np.ascontiguousarray(a, np.float32).reshape(-1, k)
        y = np.empty((a2.shape[0], n), np.float32)
        _woq.matmul_nbits(a2, a2.shape[0], k, b, scales, zeros, bits, block, n, bias, y, opts.threads)
        return [y.reshape(*a.shape[:-1], n).astype(a.dtype, copy=False)]

    return run
