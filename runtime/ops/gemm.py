"""fp32 Gemm and MatMul (numpy, BLAS underneath)."""

from __future__ import annotations

import numpy as np

from runtime.ops.registry import elementwise, register


@register("Gemm")
def gemm(node, graph, opts):
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    ta, tb = node.attrs.get("transA", 0), node.attrs.get("transB", 0)

    def run(a, b, c=None):
        y = (a.T if ta else a) @ (b.T if tb else b)
        if alpha != 1.0:
            y = y * np.float32(alpha)
        if c is not None:
            y = y + (c * np.float32(beta) if beta != 1.0 else c)
        return [y.astype(a.dtype, copy=False)]

    return run


register("MatMul")(elementwise(np.matmul))
