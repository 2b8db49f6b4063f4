"""fp32 Gemm, MatMul (numpy broadcasting, BLAS underneath) and Einsum."""

from __future__ import annotations

import numpy as np

from runtime.graph import MS_DOMAIN
from runtime.ops.registry import QdqFold, elementwise, register


@register("Gemm", fuses_clamp=True, fold=QdqFold("gemm", (MS_DOMAIN, "QGemm")))
def gemm(node, graph, opts):
    alpha, beta = node.attrs["alpha"], node.attrs["beta"]
    ta, tb = node.attrs["transA"], node.attrs["transB"]

    def run(a, b, c=None):
        y = (a.T if ta else a) @ (b.T if tb else b)
        if alpha != 1.0:
            y = y * a.dtype.type(alpha)
        if c is not None:
            y = y + (c * c.dtype.type(beta) if beta != 1.0 else c)
        return [y.astype(a.dtype, copy=False)]

    return run


register("MatMul", fuses_clamp=True, fold=QdqFold("matmul", ("", "QLinearMatMul")))(elementwise(np.matmul))


@register("Einsum")
def einsum(node, graph, opts):
    equation = node.attrs["equation"].replace(" ", "")
    return lambda *xs: [np.einsum(equation, *xs, optimize=len(xs) > 2).astype(xs[0].dtype, copy=False)]
