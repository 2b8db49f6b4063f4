"""Converters for the float ops of a traced model: fx node → ONNX node(s).

Three registries, keyed the way fx names a call: module class, function, method
name. A converter receives the context, the fx node (and the module for
``call_module``) and returns the node's value. Anything absent here is unsupported,
and the exporter reports it before writing anything.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from export.context import ExportContext
from export.errors import OnnxExportError
from export.quant_ops import conv_attrs

Converter = Callable[..., Any]
MODULES: dict[type, Converter] = {}
FUNCTIONS: dict[Any, Converter] = {}
METHODS: dict[str, Converter] = {}


def _register(table: dict, *keys: Any) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for k in keys:
            table[k] = fn
        return fn

    return deco


def arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument ``i``/``name`` of a call."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def rank(node: Any) -> int:
    return len(ExportContext.shape(node))


def _axis(d: int, r: int) -> int:
    return d + r if d < 0 else d


def _unary(op: str) -> Converter:
    return lambda cx, node, *_: cx.builder.node(op, [cx.tensor(node.args[0])], node.name)


def _identity(cx: ExportContext, node: fx.Node, *_: Any) -> Any:
    return cx.value(node.args[0])


# --- activations --------------------------------------------------------------------------
for _op, _mods, _fns, _meths in [
    ("Relu", (nn.ReLU,), (F.relu, torch.relu), ("relu",)),
    ("Sigmoid", (nn.Sigmoid,), (torch.sigmoid, F.sigmoid), ("sigmoid",)),
    ("Tanh", (nn.Tanh,), (torch.tanh, F.tanh), ("tanh",)),
    ("Erf", (), (torch.erf,), ("erf",)),
    ("Exp", (), (torch.exp,), ("exp",)),
    ("Sqrt", (), (torch.sqrt,), ("sqrt",)),
    ("Neg", (), (operator.neg, torch.neg), ("neg",)),
]:
    _register(MODULES, *_mods)(_unary(_op))
    _register(FUNCTIONS, *_fns)(_unary(_op))
    _register(METHODS, *_meths)(_unary(_op))

_register(MODULES, nn.Identity, nn.Dropout)(_identity)
_register(FUNCTIONS, F.dropout)(_identity)
_register(METHODS, "contiguous")(_identity)


def clip(cx: ExportContext, x: str, lo: float, hi: float, hint: str) -> str:
    return cx.builder.node("Clip", [x, cx.builder.scalar(lo), cx.builder.scalar(hi)], hint)


@_register(MODULES, nn.ReLU6, nn.Hardtanh)
def _hardtanh_module(cx: ExportContext, node: fx.Node, mod: nn.Hardtanh) -> str:
    return clip(cx, cx.tensor(node.args[0]), mod.min_val, mod.max_val, node.name)


@_register(FUNCTIONS, F.relu6)
def _relu6(cx: ExportContext, node: fx.Node) -> str:
    return clip(cx, cx.tensor(node.args[0]), 0.0, 6.0, node.name)


@_register(FUNCTIONS, F.hardtanh)
def _hardtanh(cx: ExportContext, node: fx.Node) -> str:
    return clip(
        cx, cx.tensor(node.args[0]), arg(node, 1, "min_val", -1.0), arg(node, 2, "max_val", 1.0), node.name
    )


@_register(MODULES, nn.SiLU)
@_register(FUNCTIONS, F.silu)
def _silu(cx: ExportContext, node: fx.Node, *_: Any) -> str:
    x = cx.tensor(node.args[0])
    return cx.builder.node("Mul", [x, cx.builder.node("Sigmoid", [x], f"{node.name}_sigmoid")], node.name)


@_register(MODULES, nn.Hardswish)
@_register(FUNCTIONS, F.hardswish)
def _hardswish(cx: ExportContext, node: fx.Node, *_: Any) -> str:
    return cx.builder.node("HardSwish", [cx.tensor(node.args[0])], node.name)


@_register(MODULES, nn.Hardsigmoid)
@_register(FUNCTIONS, F.hardsigmoid)
def _hardsigmoid(cx: ExportContext, node: fx.Node, *_: Any) -> str:
    return cx.builder.node("HardSigmoid", [cx.tensor(node.args[0])], node.name, alpha=1.0 / 6.0, beta=0.5)


def gelu(cx: ExportContext, x: str, approximate: str, hint: str) -> str:
    """Gelu (opset ≥ 20), else its exact Erf form (or the tanh form when approximate)."""
    b = cx.builder
    if cx.opset >= 20:
        return b.node("Gelu", [x], hint, approximate=approximate)
    if approximate == "tanh":  # 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        x3 = b.node("Mul", [b.node("Mul", [x, x], f"{hint}_x2"), x], f"{hint}_x3")
        inner = b.node("Add", [x, b.node("Mul", [x3, b.scalar(0.044715)], f"{hint}_cx3")], f"{hint}_inner")
        t = b.node(
            "Tanh", [b.node("Mul", [inner, b.scalar(math.sqrt(2.0 / math.pi))], f"{hint}_k")], f"{hint}_t"
        )
    else:  # 0.5·x·(1 + erf(x/√2))
        t = b.node("Erf", [b.node("Div", [x, b.scalar(math.sqrt(2.0))], f"{hint}_div")], f"{hint}_erf")
    half_x = b.node("Mul", [x, b.scalar(0.5)], f"{hint}_half")
    return b.node("Mul", [half_x, b.node("Add", [t, b.scalar(1.0)], f"{hint}_1p")], hint)


@_register(MODULES, nn.GELU)
def _gelu_module(cx: ExportContext, node: fx.Node, mod: nn.GELU) -> str:
    return gelu(cx, cx.tensor(node.args[0]), mod.approximate, node.name)


@_register(FUNCTIONS, F.gelu)
def _gelu(cx: ExportContext, node: fx.Node) -> str:
    return gelu(cx, cx.tensor(node.args[0]), node.kwargs.get("approximate", "none"), node.name)


def softmax(cx: ExportContext, node: fx.Node, dim: int | None) -> str:
    if dim is None:
        raise OnnxExportError(f"{node.name} (softmax): give dim explicitly")
    return cx.builder.node("Softmax", [cx.tensor(node.args[0])], node.name, axis=int(dim))


@_register(MODULES, nn.Softmax)
def _softmax_module(cx: ExportContext, node: fx.Node, mod: nn.Softmax) -> str:
    return softmax(cx, node, mod.dim)


@_register(FUNCTIONS, F.softmax, torch.softmax)
@_register(METHODS, "softmax")
def _softmax(cx: ExportContext, node: fx.Node) -> str:
    return softmax(cx, node, arg(node, 1, "dim"))


# --- normalization ---------------------------------------------------------------------
def layer_norm(cx: ExportContext, node: fx.Node, normalized: Any, weight: Any, bias: Any, eps: float) -> str:
    if cx.opset < 17:
        raise OnnxExportError(
            f"{node.name} (layer_norm): LayerNormalization needs opset ≥ 17, got {cx.opset}"
        )
    n = len(normalized) if isinstance(normalized, (tuple, list)) else 1
    shape = ExportContext.shape(node)[-n:]
    w = (
        cx.tensor(weight)
        if weight is not None
        else cx.builder.initializer(np.ones(shape, np.float32), "ln_ones")
    )
    inputs = [cx.tensor(node.args[0]), w] + ([cx.tensor(bias)] if bias is not None else [])
    return cx.builder.node("LayerNormalization", inputs, node.name, axis=-n, epsilon=float(eps))


@_register(MODULES, nn.LayerNorm)
def _layer_norm_module(cx: ExportContext, node: fx.Node, mod: nn.LayerNorm) -> str:
    return layer_norm(cx, node, mod.normalized_shape, mod.weight, mod.bias, mod.eps)


@_register(FUNCTIONS, F.layer_norm)
def _layer_norm(cx: ExportContext, node: fx.Node) -> str:
    return layer_norm(
        cx,
        node,
        arg(node, 1, "normalized_shape"),
        arg(node, 2, "weight"),
        arg(node, 3, "bias"),
        arg(node, 4, "eps", 1e-5),
    )


@_register(MODULES, nn.BatchNorm1d, nn.BatchNorm2d)
def _batch_norm(cx: ExportContext, node: fx.Node, mod: nn.BatchNorm2d) -> str:
    """A BatchNorm that did not follow a conv (so was not folded), in eval semantics."""
    c = mod.num_features
    b = cx.builder
    w = mod.weight if mod.weight is not None else torch.ones(c)
    bias = mod.bias if mod.bias is not None else torch.zeros(c)
    inputs = [cx.tensor(node.args[0])] + [
        b.initializer(t.detach().float().numpy(), f"{node.target}.{k}")
        for k, t in (("weight", w), ("bias", bias), ("mean", mod.running_mean), ("var", mod.running_var))
    ]
    return b.node("BatchNormalization", inputs, node.name, epsilon=float(mod.eps))


# --- float conv / linear (modules left unquantized with ``skip``) -------------------------
@_register(MODULES, nn.Conv2d)
def _conv(cx: ExportContext, node: fx.Node, mod: nn.Conv2d) -> str:
    if mod.padding_mode != "zeros":
        raise OnnxExportError(f"{node.name} (Conv2d): padding_mode={mod.padding_mode!r} is not exported")
    b = cx.builder
    inputs = [cx.tensor(node.args[0]), b.initializer(mod.weight.detach().numpy(), f"{node.target}.weight")]
    if mod.bias is not None:
        inputs.append(b.initializer(mod.bias.detach().numpy(), f"{node.target}.bias"))
    attrs = conv_attrs(mod)
    attrs["kernel_shape"] = list(mod.kernel_size)
    return b.node("Conv", inputs, node.name, **attrs)


@_register(MODULES, nn.Linear)
def _linear(cx: ExportContext, node: fx.Node, mod: nn.Linear) -> str:
    b = cx.builder
    x = cx.tensor(node.args[0])
    bias = b.initializer(mod.bias.detach().numpy(), f"{node.target}.bias") if mod.bias is not None else None
    if rank(node.args[0]) == 2:
        w = b.initializer(mod.weight.detach().numpy(), f"{node.target}.weight")
        return b.node("Gemm", [x, w] + ([bias] if bias else []), node.name, transB=1)
    w_t = b.initializer(mod.weight.detach().t().contiguous().numpy(), f"{node.target}.weight_t")
    y = b.node("MatMul", [x, w_t], f"{node.name}_matmul" if bias else node.name)
    return b.node("Add", [y, bias], node.name) if bias else y


@_register(MODULES, nn.Embedding)
def _embedding(cx: ExportContext, node: fx.Node, mod: nn.Embedding) -> str:
    w = cx.builder.initializer(mod.weight.detach().numpy(), f"{node.target}.weight")
    return cx.builder.node("Gather", [w, cx.tensor(node.args[0])], node.name, axis=0)


# --- pooling --------------------------------------------------------------------------------
def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def max_pool(
    cx: ExportContext, node: fx.Node, k: Any, s: Any, p: Any, d: Any, ceil: bool, indices: bool
) -> str:
    if indices:
        raise OnnxExportError(f"{node.name} (max_pool2d): return_indices is not exported")
    kernel = _pair(k)
    pads = _pair(p)
    return cx.builder.node(
        "MaxPool",
        [cx.tensor(node.args[0])],
        node.name,
        kernel_shape=kernel,
        strides=_pair(s) if s else kernel,
        pads=pads + pads,
        dilations=_pair(d),
        ceil_mode=int(ceil),
    )


@_register(MODULES, nn.MaxPool2d)
def _max_pool_module(cx: ExportContext, node: fx.Node, m: nn.MaxPool2d) -> str:
    return max_pool(cx, node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)


@_register(FUNCTIONS, F.max_pool2d)
def _max_pool(cx: ExportContext, node: fx.Node) -> str:
    return max_pool(
        cx,
        node,
        arg(node, 1, "kernel_size"),
        arg(node, 2, "stride"),
        arg(node, 3, "padding", 0),
        arg(node, 4, "dilation", 1),
        arg(node, 5, "ceil_mode", False),
        arg(node, 6, "return_indices", False),
    )


def avg_pool(
    cx: ExportContext, node: fx.Node, k: Any, s: Any, p: Any, ceil: bool, count_pad: bool, divisor: Any
) -> str:
    if divisor is not None:
        raise OnnxExportError(f"{node.name} (avg_pool2d): divisor_override has no ONNX equivalent")
    kernel, pads = _pair(k), _pair(p)
    return cx.builder.node(
        "AveragePool",
        [cx.tensor(node.args[0])],
        node.name,
        kernel_shape=kernel,
        strides=_pair(s) if s else kernel,
        pads=pads + pads,
        ceil_mode=int(ceil),
        count_include_pad=int(count_pad),
    )


@_register(MODULES, nn.AvgPool2d)
def _avg_pool_module(cx: ExportContext, node: fx.Node, m: nn.AvgPool2d) -> str:
    return avg_pool(
        cx, node, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override
    )


@_register(FUNCTIONS, F.avg_pool2d)
def _avg_pool(cx: ExportContext, node: fx.Node) -> str:
    return avg_pool(
        cx,
        node,
        arg(node, 1, "kernel_size"),
        arg(node, 2, "stride"),
        arg(node, 3, "padding", 0),
        arg(node, 4, "ceil_mode", False),
        arg(node, 5, "count_include_pad", True),
        arg(node, 6, "divisor_override"),
    )


def adaptive_avg_pool(cx: ExportContext, node: fx.Node) -> str:
    """1×1 output → GlobalAveragePool; an output size dividing the input → AveragePool."""
    x = cx.tensor(node.args[0])
    h, w = ExportContext.shape(node.args[0])[-2:]
    oh, ow = ExportContext.shape(node)[-2:]
    if (oh, ow) == (1, 1):
        return cx.builder.node("GlobalAveragePool", [x], node.name)
    if h % oh or w % ow:
        raise OnnxExportError(
            f"{node.name} (adaptive_avg_pool2d): output {oh}×{ow} does not divide input {h}×{w}, "
            "so no fixed ONNX pooling window reproduces it"
        )
    k = [h // oh, w // ow]
    return cx.builder.node("AveragePool", [x], node.name, kernel_shape=k, strides=k)


_register(MODULES, nn.AdaptiveAvgPool2d)(lambda cx, node, _m: adaptive_avg_pool(cx, node))
_register(FUNCTIONS, F.adaptive_avg_pool2d)(adaptive_avg_pool)


def reduce_mean(cx: ExportContext, node: fx.Node) -> str:
    dims = arg(node, 1, "dim")
    keep = int(bool(arg(node, 2, "keepdim", False)))
    r = rank(node.args[0])
    axes = (
        list(range(r)) if dims is None else [_axis(d, r) for d in ([dims] if isinstance(dims, int) else dims)]
    )
    x = cx.tensor(node.args[0])
    if cx.opset >= 18:
        return cx.builder.node("ReduceMean", [x, cx.builder.int64s(axes, "axes")], node.name, keepdims=keep)
    return cx.builder.node("ReduceMean", [x], node.name, axes=axes, keepdims=keep)


_register(FUNCTIONS, torch.mean)(reduce_mean)
_register(METHODS, "mean")(reduce_mean)


# --- shapes ---------------------------------------------------------------------------------
def reshape_like_output(cx: ExportContext, node: fx.Node, *_: Any) -> str:
    """view/reshape/flatten/unflatten: Reshape to the traced output shape (batch kept free)."""
    src = node.args[0]
    if rank(src) == 4 and rank(node) == 2 and ExportContext.shape(src)[0] == ExportContext.shape(node)[0]:
        return cx.builder.node("Flatten", [cx.tensor(src)], node.name, axis=1)
    return cx.builder.node("Reshape", [cx.tensor(src), cx.reshape_target(src, node)], node.name)


_register(MODULES, nn.Flatten, nn.Unflatten)(reshape_like_output)
_register(FUNCTIONS, torch.flatten, torch.reshape)(reshape_like_output)
_register(METHODS, "view", "reshape", "flatten", "unflatten")(reshape_like_output)


@_register(FUNCTIONS, torch.transpose)
@_register(METHODS, "transpose")
def _transpose(cx: ExportContext, node: fx.Node) -> str:
    r = rank(node.args[0])
    perm = list(range(r))
    a, b = _axis(node.args[1], r), _axis(node.args[2], r)
    perm[a], perm[b] = perm[b], perm[a]
    return cx.builder.node("Transpose", [cx.tensor(node.args[0])], node.name, perm=perm)


@_register(FUNCTIONS, torch.permute)
@_register(METHODS, "permute")
def _permute(cx: ExportContext, node: fx.Node) -> str:
    dims = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
    if not dims:
        dims = node.kwargs["dims"]
    r = rank(node.args[0])
    return cx.builder.node(
        "Transpose", [cx.tensor(node.args[0])], node.name, perm=[_axis(d, r) for d in dims]
    )


@_register(FUNCTIONS, torch.unsqueeze)
@_register(METHODS, "unsqueeze")
def _unsqueeze(cx: ExportContext, node: fx.Node) -> str:
    d = _axis(arg(node, 1, "dim"), rank(node))
    return cx.builder.node("Unsqueeze", [cx.tensor(node.args[0]), cx.builder.int64s([d], "axes")], node.name)


@_register(FUNCTIONS, torch.squeeze)
@_register(METHODS, "squeeze")
def _squeeze(cx: ExportContext, node: fx.Node) -> str:
    d = arg(node, 1, "dim")
    if d is None:
        raise OnnxExportError(f"{node.name} (squeeze): give dim explicitly (the batch may be 1)")
    axes = cx.builder.int64s([_axis(d, rank(node.args[0]))], "axes")
    return cx.builder.node("Squeeze", [cx.tensor(node.args[0]), axes], node.name)


@_register(FUNCTIONS, torch.cat, torch.concat)
def _cat(cx: ExportContext, node: fx.Node) -> str:
    seq = node.args[0]
    d = _axis(arg(node, 1, "dim", 0), rank(node))
    return cx.builder.node("Concat", [cx.tensor(a) for a in seq], node.name, axis=d)


@_register(METHODS, "size")
def _size(cx: ExportContext, node: fx.Node) -> Any:
    """Example sizes, as Python ints: they only feed view/reshape, which use traced shapes."""
    shape = ExportContext.shape(node.args[0])
    d = arg(node, 1, "dim")
    return shape if d is None else shape[d]


@_register(FUNCTIONS, builtins.getattr)
def _getattr(cx: ExportContext, node: fx.Node) -> Any:
    if node.args[1] != "shape":
        raise OnnxExportError(f"{node.name} (getattr): attribute {node.args[1]!r} is not exported")
    return ExportContext.shape(node.args[0])


@_register(FUNCTIONS, operator.getitem)
def _getitem(cx: ExportContext, node: fx.Node) -> Any:
    base, index = cx.value(node.args[0]), node.args[1]
    if not isinstance(base, str):
        return base[index]
    return tensor_index(cx, node, base, index if isinstance(index, tuple) else (index,))


def tensor_index(cx: ExportContext, node: fx.Node, x: str, index: tuple) -> str:
    """Basic indexing with ints and unit-step slices: Slice, then Squeeze the int axes."""
    starts, ends, axes, squeeze = [], [], [], []
    for d, idx in enumerate(index):
        if isinstance(idx, int):
            starts.append(idx)
            ends.append(idx + 1 if idx != -1 else 2**62)
            axes.append(d)
            squeeze.append(d)
        elif isinstance(idx, slice) and idx.step in (None, 1):
            if idx.start is None and idx.stop is None:
                continue
            starts.append(idx.start or 0)
            ends.append(2**62 if idx.stop is None else idx.stop)
            axes.append(d)
        else:
            raise OnnxExportError(
                f"{node.name} (getitem): index {idx!r} is not exported (ints and unit slices only)"
            )
    b = cx.builder
    y = x
    if axes:
        y = b.node(
            "Slice",
            [x, b.int64s(starts, "starts"), b.int64s(ends, "ends"), b.int64s(axes, "axes")],
            f"{node.name}_slice" if squeeze else node.name,
        )
    if squeeze:
        y = b.node("Squeeze", [y, b.int64s(squeeze, "axes")], node.name)
    return y


# --- arithmetic -------------------------------------------------------------------------------
def binary(op: str, py: Callable[[Any, Any], Any]) -> Converter:
    """Elementwise op; Python numbers on both sides (shape arithmetic) stay Python."""

    def convert(cx: ExportContext, node: fx.Node) -> Any:
        a, b = cx.value(node.args[0]), cx.value(node.args[1])
        if not isinstance(a, str) and not isinstance(b, str):
            return py(a, b)
        if node.kwargs.get("alpha", 1) != 1:
            raise OnnxExportError(f"{node.name} ({op}): alpha is not exported")
        return cx.builder.node(op, [cx.tensor(node.args[0]), cx.tensor(node.args[1])], node.name)

    return convert


ADD = binary("Add", operator.add)  # also QuantAdd modules (quant/modules.py)
MATMUL = binary("MatMul", operator.matmul)  # also QuantMatMul modules

for _op, _py, _fns, _meths in [
    ("Add", operator.add, (operator.add, operator.iadd, torch.add), ("add",)),
    ("Sub", operator.sub, (operator.sub, torch.sub), ("sub",)),
    ("Mul", operator.mul, (operator.mul, operator.imul, torch.mul), ("mul",)),
    ("Div", operator.truediv, (operator.truediv, torch.div), ("div",)),
    ("Pow", operator.pow, (operator.pow, torch.pow), ("pow",)),
    ("MatMul", operator.matmul, (operator.matmul, torch.matmul, torch.bmm), ("matmul", "bmm")),
]:
    _register(FUNCTIONS, *_fns)(binary(_op, _py))
    _register(METHODS, *_meths)(binary(_op, _py))


@_register(FUNCTIONS, operator.floordiv)
def _floordiv(cx: ExportContext, node: fx.Node) -> Any:
    a, b = cx.value(node.args[0]), cx.value(node.args[1])
    if isinstance(a, str) or isinstance(b, str):
        raise OnnxExportError(f"{node.name} (floordiv): only shape arithmetic is exported")
    return a // b


@_register(FUNCTIONS, math.sqrt, math.floor, math.ceil, builtins.int, builtins.float)
def _python_scalar(cx: ExportContext, node: fx.Node) -> Any:
    """Python arithmetic on shapes (e.g. ``math.sqrt(head_dim)``) is evaluated at export time."""
    args = cx.value(node.args)
    if any(isinstance(a, str) for a in args):
        raise OnnxExportError(f"{node.name} ({node.target.__name__}): only Python numbers are exported here")
    return node.target(*args)
