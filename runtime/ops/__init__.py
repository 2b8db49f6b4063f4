"""Op kernels, one module per op family; importing this package fills the registry."""

from runtime.ops import (  # noqa: F401  (imported for their registrations)
    conv,
    conv_nd,
    dequantize_linear,
    elementwise,
    gemm,
    matmul_integer,
    matmul_nbits,
    normalization,
    pool,
    qlinear_binary,
    qlinear_concat,
    qlinear_conv,
    qlinear_matmul,
    qlinear_pool,
    qlinear_softmax,
    qlinear_unary,
    quantize_linear,
    reduce,
    resize,
    rnn,
    tensor,
)
from runtime.ops.registry import RunOptions, build, is_supported, lookup, register

__all__ = ["RunOptions", "build", "is_supported", "lookup", "register"]
