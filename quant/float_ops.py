"""The simulation's float ops in the arithmetic of the exported file (DESIGN.md "Float ops between
quantizers").

Between a DequantizeLinear and a QuantizeLinear a float op's fp32 result decides the next code, and
one ulp decides it whenever the value sits on a rounding boundary of the grid. Torch's fp32 kernels
(their vector width depends on the CPU, exp/erf/tanh are Sleef approximations, sums run in
blocks) and numpy's differ in that last ulp, so a random-weight Swin or GPT-2 lost a few codes
per million per layer and then whole outputs as the differences grew layer by layer.

So the frozen model computes these ops the way the runtime does, op by op as torch.onnx writes
them: every transcendental function and every reduction is evaluated in float64 and rounded to
float32 once (an fp64 result is within an ulp of fp64 of the exact value in torch, libm and
numpy alike, so the rounded fp32 values agree except with probability ~2⁻²⁸ per element), and
basic arithmetic (+ − × ÷ √) stays in fp32, which IEEE rounds correctly everywhere. A composite
op follows torch.onnx's own decomposition (GELU is Div, Erf, Add, Mul, Mul), each step rounded
to fp32 as the ONNX graph rounds it. The runtime's kernels (runtime/ops/normalization.py,
runtime/ops/elementwise.py) implement the same formulas.

In training the ops are torch's own (fast, same gradients); ``FloatOp`` switches on
``self.training`` like the quantized modules do. The exporter puts the plain ATen op back
(``float_op_targets``), so the file holds ordinary ONNX ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx, nn

aten = torch.ops.aten

_SQRT_2 = 1.4142135623730951  # torch.onnx's constants (onnxscript torch_lib, aten_gelu), as fp32 tensors
_SQRT_2_OVER_PI = 0.7978845608028654
_GELU_CUBIC = 0.044715


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    """A constant as the file stores it: in the input's dtype."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _once(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn evaluated in float64 and rounded to the input's dtype once."""
    def rounded(x: torch.Tensor) -> torch.Tensor:
        return fn(x.double()).to(x.dtype)

    rounded.__name__ = fn.__name__
    return rounded


exp, tanh, sigmoid, log = (_once(f) for f in (torch.exp, torch.tanh, torch.sigmoid, torch.log))

# The runtime's float32 erf (runtime/ops/elementwise.py): a rational function in a fixed sequence
# of IEEE single operations, which torch repeats bit for bit (same coefficients, same order). An
# erf in float64 rounded once would do too, but numpy has none that is fast.
ERF_P = (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
    -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02,
)
ERF_Q = (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def _horner(x2: torch.Tensor, coefficients: tuple[float, ...]) -> torch.Tensor:
    p = torch.full_like(x2, coefficients[0])
    for c in coefficients[1:]:
        p = p * x2 + torch.tensor(c, dtype=x2.dtype, device=x2.device)
    return p


def erf(x: torch.Tensor) -> torch.Tensor:
    """x·P(x²)/Q(x²) on x clamped to [−4, 4], in float32."""
    f = torch.clamp(x.float(), -4.0, 4.0)
    x2 = f * f
    return (f * _horner(x2, ERF_P) / _horner(x2, ERF_Q)).to(x.dtype)


def pow_scalar(x: torch.Tensor, exponent: float) -> torch.Tensor:
    """ONNX Pow with the exponent stored in the input's dtype, evaluated in float64."""
    return torch.pow(x.double(), _const(exponent, x).double()).to(x.dtype)


def softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ONNX Softmax: exp(x − max) / Σ, in float64, rounded once."""
    x64 = x.double()
    e = torch.exp(x64 - x64.amax(dim, keepdim=True))
    y = (e / e.sum(dim, keepdim=True)).to(x.dtype)
    return y if dtype is None else y.to(dtype)


def softmax_half(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    """``aten._softmax`` (same as :func:`softmax`; fp16 inputs are widened first, as torch.onnx does)."""
    return softmax(x.float() if half_to_float else x, dim)


def log_softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """ONNX LogSoftmax: (x − max) − log Σ exp(x − max), in float64, rounded once."""
    x64 = x.double()
    s = x64 - x64.amax(dim, keepdim=True)
    y = (s - torch.log(torch.exp(s).sum(dim, keepdim=True))).to(x.dtype)
    return y if dtype is None else y.to(dtype)


def log_softmax_half(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    return log_softmax(x.float() if half_to_float else x, dim)


def layer_norm(x: torch.Tensor, normalized_shape, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5, cudnn_enable: bool = True) -> torch.Tensor:
    """ONNX LayerNormalization: statistics and the normalised value in float64, rounded once,
    then × scale and + bias in the input's dtype (the specification's Cast → Mul → Add).
    ε is the file's float32 attribute."""
    dims = tuple(range(-len(normalized_shape), 0))
    x64 = x.double()
    d = x64 - x64.mean(dims, keepdim=True)
    var = (d * d).mean(dims, keepdim=True)
    y = (d / torch.sqrt(var + float(torch.tensor(eps, dtype=torch.float32)))).to(x.dtype)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU as torch.onnx decomposes it, every step rounded to the input's dtype."""
    if approximate == "tanh":
        inner = x + _const(_GELU_CUBIC, x) * pow_scalar(x, 3.0)
        t = tanh(_const(_SQRT_2_OVER_PI, x) * inner) + 1
    else:
        t = erf(x / _const(_SQRT_2, x)) + 1
    return x * (_const(0.5, x) * t)


def silu(x: torch.Tensor) -> torch.Tensor:
    """torch.onnx's SiLU: Mul(x, Sigmoid(x))."""
    return x * sigmoid(x)


hardswish = _once(lambda x: x * torch.clamp(x / 6 + 0.5, 0.0, 1.0))
"""ONNX HardSwish (x · clip(x/6 + ½, 0, 1)), in float64."""


def hardsigmoid(x: torch.Tensor) -> torch.Tensor:
    """torch.onnx's HardSigmoid(alpha=1/6, beta=1/2), alpha the file's float32 attribute, in float64."""
    alpha = float(torch.tensor(1 / 6, dtype=torch.float32))
    return torch.clamp(x.double() * alpha + 0.5, 0.0, 1.0).to(x.dtype)


def mish(x: torch.Tensor) -> torch.Tensor:
    """ONNX Mish (x · tanh(softplus(x))), in float64."""
    x64 = x.double()
    return (x64 * torch.tanh(torch.logaddexp(torch.zeros_like(x64), x64))).to(x.dtype)


def vector_norm(x: torch.Tensor, ord: float = 2.0, dim=None, keepdim: bool = False,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    """``torch.linalg.vector_norm`` (F.normalize's norm; torch.onnx writes ReduceL2 / ReduceL1 /
    ReduceMax for orders 2, 1, inf) in float64, rounded once."""
    x = x if dtype is None else x.to(dtype)
    return torch.linalg.vector_norm(x.double(), ord, dim, keepdim).to(x.dtype)


# ATen op (as torch.export records it) -> its form in the file's arithmetic
FORMS: dict[torch._ops.OpOverload, Callable[..., torch.Tensor]] = {
    aten.softmax.int: softmax,
    aten._softmax.default: softmax_half,
    aten.log_softmax.int: log_softmax,
    aten._log_softmax.default: log_softmax_half,
    aten.layer_norm.default: layer_norm,
    aten.gelu.default: gelu,
    aten.silu.default: silu,
    aten.exp.default: exp,
    aten.tanh.default: tanh,
    aten.sigmoid.default: sigmoid,
    aten.erf.default: erf,
    aten.log.default: log,
    aten.pow.Tensor_Scalar: pow_scalar,
    aten.hardswish.default: hardswish,
    aten.hardsigmoid.default: hardsigmoid,
    aten.mish.default: mish,
    aten.linalg_vector_norm.default: vector_norm,
}


class FloatOp(nn.Module):
    """One float ATen op of a prepared graph: torch's kernel in training, the file's arithmetic
    (``FORMS``) in eval."""

    def __init__(self, op: torch._ops.OpOverload) -> None:
        super().__init__()
        self.op = op

    @property
    def op_name(self) -> str:
        return self.op._schema.name

    def forward(self, *args, **kwargs) -> torch.Tensor:
        if self.training:
            return self.op(*args, **kwargs)
        return FORMS[self.op](*args, **kwargs)

    def extra_repr(self) -> str:
        return self.op_name


_CONTAINER = "float_ops"


def mirror_float_ops(gm: fx.GraphModule) -> int:
    """Replace each ATen call in ``FORMS`` with a ``FloatOp`` module (``float_ops.<node>``);
    returns how many. The node keeps its metadata (module stack: the report and skip matching)."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in FORMS:
            continue
        if not hasattr(gm, _CONTAINER):
            gm.add_module(_CONTAINER, nn.Module())
        getattr(gm, _CONTAINER).add_module(node.name, FloatOp(node.target))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(f"{_CONTAINER}.{node.name}", node.args, node.kwargs)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    return count


def restore_float_ops(gm: fx.GraphModule) -> None:
    """The inverse for export: each ``FloatOp`` call becomes its plain ATen call again."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        mod = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(mod, FloatOp):
            continue
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(mod.op, node.args, node.kwargs)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    if hasattr(gm, _CONTAINER):
        delattr(gm, _CONTAINER)
    gm.recompile()
