"""fp32 (and integer where ONNX allows) elementwise ops with numpy broadcasting."""

from __future__ import annotations

import numpy as np

from runtime.ops.registry import elementwise, register


def erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 in float64: |error| < 1.5e-7, below fp32 resolution near 1."""
    t64 = x.astype(np.float64)
    a = np.abs(t64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (np.sign(t64) * (1.0 - poly * np.exp(-a * a))).astype(x.dtype)


for _op, _fn in {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Pow": np.power,
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Log": np.log,
    "Neg": np.negative,
    "Abs": np.abs,
    "Tanh": np.tanh,
    "Reciprocal": np.reciprocal,
    "Erf": erf,
    "Equal": np.equal,
    "Less": np.less,
    "Greater": np.greater,
    "Where": np.where,
    "Min": np.minimum,
    "Max": np.maximum,
    "Floor": np.floor,
    "Ceil": np.ceil,
}.items():
    register(_op)(elementwise(_fn))


@register("Div")
def div(node, graph, opts):
    def run(a, b):
        if np.issubdtype(a.dtype, np.integer):
            return [np.trunc(a / b).astype(a.dtype)]
        return [np.divide(a, b).astype(a.dtype, copy=False)]

    return run


@register("Relu")
def relu(node, graph, opts):
    return lambda x: [np.maximum(x, x.dtype.type(0))]


@register("Sigmoid")
def sigmoid(node, graph, opts):
    return lambda x: [(1.0 / (1.0 + np.exp(-x))).astype(x.dtype)]


@register("LeakyRelu")
def leaky_relu(node, graph, opts):
    alpha = np.float32(node.attrs.get("alpha", 0.01))
    return lambda x: [np.where(x >= 0, x, x * alpha).astype(x.dtype)]


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
    tanh = node.attrs.get("approximate", "none") == "tanh"

    def run(x):
        if tanh:
            y = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
        else:
            y = 0.5 * x * (1 + erf(x / np.sqrt(2)))
        return [y.astype(x.dtype)]

    return run
