"""The one op-policy table: how each op of a captured graph is quantized (DESIGN.md §5).

Every op falls in one kind:

- ``weighted``: an integer kernel with int8 weights (Conv, Linear: QuantWeighted modules);
- ``add`` / ``matmul`` / ``cat``: integer kernels of two (or n) quantized activations;
- ``exact``: keeps its input's grid bit for bit (ReLU, max-pool, reshape, slice, ...);
- ``requant``: stays on its input's grid but must round again (average pools, means);
- ``float``: runs in float between DequantizeLinear and QuantizeLinear (everything else).

Ops are keyed by their ATen name (``"aten::relu"``, as ``torch.export`` records them),
and the torch-level callables that ``torch.fx`` records map onto the same entries, so
preparation (quant/prepare.py), the report and the exporter all read this one table.
``ONNX_EXACT`` is the same fact at the ONNX level for the QOperator rewrite: the ONNX
ops an ``exact`` ATen op becomes.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTED, ADD, MATMUL, CAT, EXACT, REQUANT, FLOAT = "weighted", "add", "matmul", "cat", "exact", "requant", "float"

# ATen name -> kind. Ops absent here are FLOAT.
ATEN: dict[str, str] = {
    **dict.fromkeys(("aten::add", "aten::add_"), ADD),
    **dict.fromkeys(("aten::cat", "aten::concat", "aten::concatenate"), CAT),
    **dict.fromkeys(("aten::matmul", "aten::bmm"), MATMUL),
    **dict.fromkeys(
        (
            "aten::relu", "aten::relu_", "aten::max_pool2d", "aten::max_pool1d", "aten::flatten", "aten::view",
            "aten::reshape", "aten::_unsafe_view", "aten::transpose", "aten::permute", "aten::t", "aten::squeeze",
            "aten::unsqueeze", "aten::chunk", "aten::split", "aten::split_with_sizes", "aten::unbind",
            "aten::contiguous", "aten::clone", "aten::dropout", "aten::alias", "aten::expand", "aten::slice",
            "aten::select", "aten::channel_shuffle", "aten::pixel_shuffle", "aten::pixel_unshuffle",
            "aten::unflatten", "aten::narrow", "aten::detach",
        ),
        EXACT,
    ),
    **dict.fromkeys(("aten::adaptive_avg_pool2d", "aten::avg_pool2d", "aten::mean"), REQUANT),
}

# ONNX ops (what the exact ATen ops above become) that move int8 codes unchanged.
# (single-output ops only: the QOperator rewrite re-emits them on the codes).
ONNX_EXACT = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice",
              "Gather", "Expand", "DepthToSpace", "SpaceToDepth")

# torch.fx records torch-level callables; each maps to the ATen entry it dispatches to.
_FX_FUNCTIONS: dict[Any, str] = {
    operator.add: "aten::add", torch.add: "aten::add", operator.iadd: "aten::add",
    torch.cat: "aten::cat", torch.concat: "aten::cat",
    torch.matmul: "aten::matmul", operator.matmul: "aten::matmul", torch.bmm: "aten::bmm",
    F.relu: "aten::relu", torch.relu: "aten::relu", F.max_pool2d: "aten::max_pool2d",
    torch.flatten: "aten::flatten", torch.reshape: "aten::reshape", torch.transpose: "aten::transpose",
    torch.permute: "aten::permute", torch.squeeze: "aten::squeeze", torch.unsqueeze: "aten::unsqueeze",
    operator.getitem: "aten::select", torch.chunk: "aten::chunk", torch.split: "aten::split",
    F.dropout: "aten::dropout",
    F.adaptive_avg_pool2d: "aten::adaptive_avg_pool2d", F.avg_pool2d: "aten::avg_pool2d", torch.mean: "aten::mean",
}
_FX_METHODS: dict[str, str] = {
    "add": "aten::add", "matmul": "aten::matmul", "view": "aten::view", "reshape": "aten::reshape",
    "flatten": "aten::flatten", "permute": "aten::permute", "transpose": "aten::transpose",
    "contiguous": "aten::contiguous", "squeeze": "aten::squeeze", "unsqueeze": "aten::unsqueeze", "relu": "aten::relu",
    "chunk": "aten::chunk", "split": "aten::split", "expand": "aten::expand", "mean": "aten::mean",
}
_FX_MODULES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    ((nn.ReLU, nn.MaxPool2d, nn.MaxPool1d, nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten), EXACT),
    ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), REQUANT),
)


def aten_name(target: Any) -> str | None:
    """``"aten::relu"`` for an ATen OpOverload (or packet), None for anything else."""
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name
    qualified = getattr(target, "_qualified_op_name", None)
    return qualified if isinstance(qualified, str) else None


def function_kind(target: Any) -> str:
    """The kind of a ``call_function`` target: an ATen op or a torch-level callable."""
    name = aten_name(target)
    if name is None:
        name = _FX_FUNCTIONS.get(target)
    return ATEN.get(name, FLOAT) if name else FLOAT


def method_kind(name: str) -> str:
    """The kind of a ``call_method`` target (``x.view(...)``: torch.fx's method calls)."""
    aten = _FX_METHODS.get(name)
    return ATEN.get(aten, FLOAT) if aten else FLOAT


def module_kind(module: nn.Module) -> str:
    """The kind of a float module left in the graph (quantized modules are classified by prepare)."""
    for classes, kind in _FX_MODULES:
        if isinstance(module, classes):
            return kind
    return FLOAT

