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


register("MatMul", fuses_clamp=True, fold=QdqFold("matmul", ("", "QLinearMatMul")))(
    elementwise(lambda a, b: np.matmul(a, b).astype(a.dtype, copy=False))  # bfloat16 @ returns float32
)


@register("Einsum")
def einsum(node, graph, opts):
    """numpy's einsum; types it has no loop for (bfloat16) run in float32."""
    equation = node.attrs["equation"].replace(" ", "")

    def run(*xs):
        native = all(x.dtype.kind in "fiub" and x.dtype.name != "bfloat16" for x in xs)
        ys = xs if native else [x.astype(np.float32) for x in xs]
        return [np.einsum(equation, *ys, optimize=len(xs) > 2).astype(xs[0].dtype, copy=False)]

    return run
