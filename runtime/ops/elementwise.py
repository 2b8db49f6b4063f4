"""Elementwise ops with numpy broadcasting: arithmetic, comparisons, logic, activations.

Outputs keep the input's dtype, as ONNX defines (numpy would promote float32 ** int64 to
float64, for one); math runs in the input's precision except where noted."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from runtime.graph import MS_DOMAIN
from runtime.ops.registry import QdqFold, elementwise, register

# erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4] (outside, erf is +-1 in float32): the rational
# approximation Eigen and TensorFlow use for float32, within 8 ulp (4.5e-7 absolute) of the
# exact value and, unlike 1 - poly * exp(-x^2), accurate in relative terms near 0. It is a fixed
# sequence of IEEE single operations, so the simulation repeats it bit for bit in torch
# (quant/float_ops.py, same coefficients; tests/integration/test_float_ops.py compares them).
ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
_erf64 = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float32 arithmetic (one rational function, in place: a few passes over the
    tensor, no float64 temporaries) for float32 and narrower types; float64 is exact (libm's
    erf per element, slow but rare)."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return _erf64(x).astype(np.float64)
    f = np.clip(x, np.float32(-4), np.float32(4), dtype=np.float32)  # NaN stays NaN
    x2 = f * f
    p = np.full_like(x2, ERF_P[0])
    for c in ERF_P[1:]:
        p *= x2
        p += np.float32(c)
    q = np.full_like(x2, ERF_Q[0])
    for c in ERF_Q[1:]:
        q *= x2
        q += np.float32(c)
    f *= p
    f /= q
    return f.astype(x.dtype, copy=False)


def _once(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """fn evaluated in float64 and rounded to the input's dtype once (DESIGN.md "Float ops between
    quantizers": the float32 result every engine that rounds the exact value agrees on)."""
    def rounded(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        with np.errstate(all="ignore"):
            return fn(x.astype(np.float64)).astype(x.dtype, copy=False)

    return rounded


def _same_dtype(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """fn, with its result cast back to the first input's dtype."""
    return lambda x, *rest: np.asarray(fn(x, *rest)).astype(x.dtype, copy=False)


def _quiet(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """fn without numpy's overflow/invalid warnings (exp of large values is inf, as ONNX wants)."""

    def run(*xs):
        with np.errstate(all="ignore"):
            return fn(*xs)

    return run


for _op, _fn in {
    "Sub": np.subtract,
    "Sqrt": np.sqrt,
    "Neg": np.negative,
    "Abs": np.abs,
    "Reciprocal": np.reciprocal,
    "Erf": erf,
    "Floor": np.floor,
    "Ceil": np.ceil,
    "Round": np.rint,
    "Sign": np.sign,
    "Sin": np.sin,
    "Cos": np.cos,
    "Tan": np.tan,
    "Asin": np.arcsin,
    "Acos": np.arccos,
    "Atan": np.arctan,
    "Sinh": np.sinh,
    "Cosh": np.cosh,
    "Asinh": np.arcsinh,
    "Acosh": np.arccosh,
    "Atanh": np.arctanh,
    "Softsign": lambda x: x / (1 + np.abs(x)),
    "Softplus": lambda x: np.logaddexp(x.dtype.type(0), x),
    "IsNaN": np.isnan,
    "Equal": np.equal,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
    "Not": np.logical_not,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
    "BitwiseAnd": np.bitwise_and,
    "BitwiseOr": np.bitwise_or,
    "BitwiseXor": np.bitwise_xor,
    "BitwiseNot": np.invert,
    "Where": np.where,
}.items():
    register(_op)(elementwise(_quiet(_fn)))

_tanh = _once(np.tanh)
for _op, _fn in {
    "Exp": _once(np.exp),
    "Log": _once(np.log),
    "Tanh": _tanh,
    "Mish": _once(lambda x: x * np.tanh(np.logaddexp(0.0, x))),
}.items():
    register(_op)(elementwise(_fn))


register("Add", fuses_clamp=True, fold=QdqFold("elementwise", (MS_DOMAIN, "QLinearAdd"), 2))(elementwise(np.add))
register("Mul", fold=QdqFold("elementwise", (MS_DOMAIN, "QLinearMul"), 2))(elementwise(np.multiply))
register("Pow")(elementwise(_quiet(_same_dtype(lambda x, y: np.power(x.astype(np.float64), y)))))  # rounded once


@register("Div")
def div(node, graph, opts):
    def run(a, b):
        if np.issubdtype(a.dtype, np.integer):
            return [np.trunc(a / b).astype(a.dtype)]
        with np.errstate(divide="ignore", invalid="ignore"):
            return [np.divide(a, b).astype(a.dtype, copy=False)]

    return run


@register("Mod")
def mod(node, graph, opts):
    fn = np.fmod if node.attrs["fmod"] else np.mod
    return lambda a, b: [_quiet(fn)(a, b).astype(a.dtype, copy=False)]


@register("BitShift")
def bit_shift(node, graph, opts):
    fn = np.left_shift if node.attrs["direction"] == "LEFT" else np.right_shift
    return lambda a, b: [fn(a, b).astype(a.dtype, copy=False)]


@register("IsInf")
def is_inf(node, graph, opts):
    neg, pos = node.attrs["detect_negative"], node.attrs["detect_positive"]
    return lambda x: [np.isinf(x) & (((x < 0) & bool(neg)) | ((x > 0) & bool(pos)))]


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], mean: bool = False):
    def factory(node, graph, opts):
        def run(*xs):
            y = functools.reduce(fn, xs)
            return [(y / len(xs)).astype(xs[0].dtype) if mean else y]

        return run

    return factory


register("Sum")(_variadic(np.add))
register("Mean")(_variadic(np.add, mean=True))
register("Max")(_variadic(np.maximum))
register("Min")(_variadic(np.minimum))


@register("Relu")
def relu(node, graph, opts):
    return lambda x: [np.maximum(x, x.dtype.type(0))]


@register("Sigmoid", fold=QdqFold("elementwise", (MS_DOMAIN, "QLinearSigmoid")))
def sigmoid(node, graph, opts):
    return lambda x: [_sigmoid(x)]


_sigmoid = _once(lambda v: 1.0 / (1.0 + np.exp(-v)))


@register("LeakyRelu", fold=QdqFold("elementwise", (MS_DOMAIN, "QLinearLeakyRelu")))
def leaky_relu(node, graph, opts):
    alpha = node.attrs["alpha"]
    return lambda x: [np.where(x >= 0, x, x * x.dtype.type(alpha)).astype(x.dtype)]


@register("PRelu")
def prelu(node, graph, opts):
    return lambda x, slope: [np.where(x < 0, x * slope, x).astype(x.dtype)]


@register("HardSigmoid")
def hard_sigmoid(node, graph, opts):
    alpha, beta = node.attrs["alpha"], node.attrs["beta"]
    run = _once(lambda v: np.clip(v * alpha + beta, 0, 1))
    return lambda x: [run(x)]


@register("HardSwish")
def hard_swish(node, graph, opts):
    return lambda x: [_hard_swish(x)]


_hard_swish = _once(lambda v: v * np.clip(v / 6 + 0.5, 0, 1))


@register("Elu")
def elu(node, graph, opts):
    alpha = node.attrs["alpha"]
    return lambda x: [_quiet(lambda v: np.where(v > 0, v, alpha * np.expm1(v)).astype(v.dtype))(x)]


@register("Selu")
def selu(node, graph, opts):
    alpha, gamma = node.attrs["alpha"], node.attrs["gamma"]
    return lambda x: [_quiet(lambda v: (gamma * np.where(v > 0, v, alpha * np.expm1(v))).astype(v.dtype))(x)]


@register("Celu")
def celu(node, graph, opts):
    alpha = node.attrs["alpha"]
    return lambda x: [
        _quiet(lambda v: (np.maximum(v, 0) + np.minimum(0, alpha * np.expm1(v / alpha))).astype(v.dtype))(x)
    ]


@register("ThresholdedRelu")
def thresholded_relu(node, graph, opts):
    alpha = node.attrs["alpha"]
    return lambda x: [np.where(x > alpha, x, 0).astype(x.dtype)]


@register("Shrink")
def shrink(node, graph, opts):
    lambd, bias = node.attrs["lambd"], node.attrs["bias"]
    return lambda x: [np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)).astype(x.dtype)]


@register("Clip")
def clip(node, graph, opts):
    attr_min, attr_max = node.attrs.get("min"), node.attrs.get("max")  # opset < 11

    def run(x, lo=None, hi=None):
        lo = attr_min if lo is None else lo
        hi = attr_max if hi is None else hi
        y = x if lo is None else np.maximum(x, np.asarray(lo, x.dtype))
        return [y if hi is None else np.minimum(y, np.asarray(hi, x.dtype))]

    return run


@register("Gelu")
def gelu(node, graph, opts):
    """Gelu as torch.onnx writes it below opset 20 (Div, Erf, Add, Mul, Mul; or Pow, Mul, Add, Mul,
    Tanh, Add, Mul, Mul), each step rounded to the input's dtype, so both forms of a file agree."""
    tanh = node.attrs["approximate"] == "tanh"
    cubic, sqrt_2_over_pi, sqrt_2 = 0.044715, math.sqrt(2 / math.pi), math.sqrt(2)

    def run(x):
        t = x.dtype.type  # numpy scalars of x's type: no float64 promotion
        if tanh:
            inner = x + t(cubic) * _cube(x)
            u = _tanh(t(sqrt_2_over_pi) * inner) + t(1)
        else:
            u = erf(x / t(sqrt_2)) + t(1)
        return [x * (t(0.5) * u)]

    return run


_cube = _once(lambda v: v**3)
