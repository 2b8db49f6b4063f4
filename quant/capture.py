"""Capture a model's graph with torch.export (non-strict) for quantization (DESIGN.md §5).

``torch.fx.symbolic_trace`` cannot follow today's models (HuggingFace transformers,
torchvision's data-dependent helpers); ``torch.export`` runs the real Python with fake
tensors and records ATen ops, the capture PyTorch, transformers, torchao's PT2E and
NNCF have converged on. The exported program is turned back into an ``fx.GraphModule``
the existing passes understand:

- parameters are unlifted (``ExportedProgram.module()``), guard and assertion nodes dropped;
- each ``aten.conv*`` / ``aten.linear`` / ``aten.batch_norm`` call whose weights are
  parameters of a Conv/Linear/BatchNorm module of the model becomes a ``call_module`` of
  that very module again, at its original name ("layer1.0.conv1"), so BN folding, fusion,
  ``skip=[...]`` and QAT's Conv-BN modules work unchanged; HuggingFace's ``Conv1D``
  (``addmm(bias, x, W)``, GPT-2) becomes an ``nn.Linear`` of the transposed weight;
  ``nn.MultiheadAttention``'s packed q/k/v projection (``linear(x, in_proj_weight,
  in_proj_bias)``) becomes an ``nn.Linear`` named ``<attention>.in_proj``;
- ``aten.scaled_dot_product_attention`` without mask, dropout or causality becomes
  ``matmul(q, kᵀ) · scale → softmax → matmul(p, v)``, the products the int8 graph computes
  on codes (as a HuggingFace eager attention), instead of one float op; an ``aten.einsum``
  that is a batched matrix product (``"bhid,bhjd->bhij"``, ``"bhij,bhjd->bhid"``, MaxViT) a ``matmul``;
- ``aten.dropout`` becomes ``nn.Dropout`` so that QAT trains with it and eval removes it.

The batch dimension is captured as dynamic, so the graph runs on any batch size. What
export cannot capture raises :class:`CaptureError` naming the module and source line.
"""

from __future__ import annotations

import inspect
import os
import traceback
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from quant.constants import constant_values
from quant.errors import QuantError
from quant.fuse import set_module
from quant.policy import aten_name

_TORCH_DIR = os.path.dirname(torch.__file__)
_QUANT_DIR = os.path.dirname(__file__)
# side-effect-only nodes export records (shape guards, metadata asserts): no value, nothing to quantize
_ASSERTS = ("aten::_assert_tensor_metadata", "aten::_assert_scalar", "aten::sym_constrain_range_for_size",
            "aten::_assert_async", "aten::sym_constrain_range")
_CONV = {"aten::conv1d": nn.Conv1d, "aten::conv2d": nn.Conv2d, "aten::conv_transpose2d": nn.ConvTranspose2d,
         "aten::conv_transpose1d": nn.ConvTranspose1d}


class CaptureError(QuantError):
    """torch.export could not capture the model; names the module and the line."""

    def __init__(self, message: str, module: str | None) -> None:
        super().__init__(message)
        self.module = module  # qualified name of the module at fault ("" = the model itself)


def capture(model: nn.Module, args: tuple, kwargs: dict | None = None) -> fx.GraphModule:
    """An fx.GraphModule of ATen ops computing ``model(*args, **kwargs)`` (eval), any batch size.

    The result is called like the model (same positional and keyword inputs).
    """
    kwargs = dict(kwargs or {})
    args, kwargs = batch_of_two(args, kwargs)
    try:
        ep = torch.export.export(
            model, args, kwargs, dynamic_shapes=dynamic_batch(model, args, kwargs), strict=False
        )
    except Exception as exc:  # export raises many types; all mean "cannot capture here"
        raise _capture_error(model, exc) from exc
    unlifted = ep.module()
    graph = unlifted.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            graph.erase_node(node)
        elif node.op == "call_function" and aten_name(node.target) in _ASSERTS and not node.users:
            graph.erase_node(node)
    gm = fx.GraphModule(unlifted, graph, class_name=type(model).__name__)
    _lift_modules(gm, model)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


def flat_inputs(gm: fx.GraphModule, args: tuple, kwargs: dict | None = None) -> list:
    """The placeholder values of a captured graph for ``model(*args, **kwargs)``."""
    codegen = gm.graph._codegen
    spec = getattr(getattr(codegen, "pytree_info", None), "in_spec", None)
    if spec is None:
        return [*args, *(kwargs or {}).values()]
    leaves, _ = pytree.tree_flatten((tuple(args), dict(kwargs or {})))
    return leaves


# --- inputs -----------------------------------------------------------------------------
def batch_of_two(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Example tensors with batch ≥ 2: export specialises a batch of 1 to a constant."""

    def grow(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.dim() and t.shape[0] == 1:
            return torch.cat([t, t])
        return t

    return tuple(pytree.tree_map(grow, list(args))), pytree.tree_map(grow, kwargs)


def dynamic_batch(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    """Dimension 0 of every tensor input is the batch (``Dim.AUTO``: static if the model needs it)."""
    from torch.export import Dim

    def spec(t: Any) -> Any:
        return {0: Dim.AUTO} if isinstance(t, torch.Tensor) and t.dim() else None

    if not kwargs:
        return tuple(pytree.tree_map(spec, list(args)))
    bound = inspect.signature(model.forward).bind(*args, **kwargs)
    return {name: pytree.tree_map(spec, value) for name, value in bound.arguments.items()}


# --- errors -----------------------------------------------------------------------------
def _capture_error(model: nn.Module, exc: Exception) -> CaptureError:
    """Name the innermost module of ``model`` (and its source line) the failure happened in."""
    names = {id(m): name for name, m in model.named_modules()}
    culprit: str | None = None
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        frame, filename = tb.tb_frame, tb.tb_frame.f_code.co_filename
        if not filename.startswith((_TORCH_DIR, _QUANT_DIR)):
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in names:
                culprit = names[id(owner)]
                line = traceback.extract_tb(tb, limit=1)[0]
                where = f" at {line.filename}:{line.lineno} ({(line.line or '').strip()})"
        tb = tb.tb_next
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {first[:300]}"
    if culprit is None or culprit == "":
        what = f"the forward of {type(model).__name__} itself"
    else:
        what = f"module '{culprit}' ({type(model.get_submodule(culprit)).__name__})"
    return CaptureError(
        f"torch.export cannot capture {what}{where}: {reason}. Fallback: on_untraceable='float' traces with "
        "torch.fx and keeps untraceable submodules in float (or quantizes Conv/Linear leaves only)",
        culprit,
    )


# --- lifting ATen calls back to modules --------------------------------------------------
def _param_owner(model: nn.Module, node: Any, cls: type | tuple[type, ...], param: str = "weight"
                 ) -> tuple[str, nn.Module] | None:
    """(qualified name, module) when ``node`` reads the parameter ``param`` of a ``cls`` module of ``model``."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    owner, _, attr = str(node.target).rpartition(".")
    if attr != param:
        return None
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return None
    return (owner, module) if isinstance(module, cls) else None


def _is_attr(node: Any, qualname: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "get_attr" and str(node.target) == qualname


def _lift_modules(gm: fx.GraphModule, model: nn.Module) -> None:
    """Turn ATen calls on a module's own parameters back into ``call_module`` of that module."""
    graph = gm.graph
    constants: dict[fx.Node, object] | None = None  # values of constant nodes, computed when first needed
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        name = aten_name(node.target)
        lifted: tuple[str, nn.Module] | None = None
        if name in _CONV or name == "aten::linear":
            cls = _CONV.get(name, nn.Linear)
            owner = _param_owner(model, node.args[1], cls)
            bias = node.args[2] if len(node.args) > 2 else None
            if owner and (bias is None if owner[1].bias is None else _is_attr(bias, f"{owner[0]}.bias")):
                lifted = owner
            elif name == "aten::linear":
                lifted = _in_proj_as_linear(gm, model, node)
                if lifted is None and owner is not None and isinstance(bias, fx.Node):
                    constants = constants if constants is not None else constant_values(gm)
                    lifted = _constant_bias_linear(gm, owner, constants.get(bias))
        elif name == "aten::batch_norm":
            owner = _param_owner(model, node.args[1], nn.modules.batchnorm._BatchNorm)
            if owner and owner[1].track_running_stats and _is_attr(node.args[3], f"{owner[0]}.running_mean"):
                lifted = owner
        elif name == "aten::addmm":
            lifted = _conv1d_as_linear(model, node)
        elif name == "aten::scaled_dot_product_attention":
            _decompose_sdpa(graph, node)
            continue
        elif name == "aten::einsum":
            _einsum_as_matmul(graph, node)
            continue
        elif name == "aten::dropout":
            module = nn.Dropout(float(node.args[1]))
            lifted = (_free_name(gm, node.name), module)
        if lifted is None:
            continue
        qualname, module = lifted
        set_module(gm, qualname, module)
        with graph.inserting_before(node):
            new = graph.call_module(qualname, (_lifted_input(node, name),))
        new.meta = dict(node.meta)
        if name == "aten::addmm":  # x.view(-1, in) @ W + b: the Linear sees the 2-D view
            new.meta["lifted_from"] = "Conv1D"
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _lifted_input(node: fx.Node, name: str | None) -> fx.Node:
    return node.args[1] if name == "aten::addmm" else node.args[0]


def _free_name(gm: fx.GraphModule, base: str) -> str:
    name = base
    while hasattr(gm, name):
        name += "_m"
    return name


def _conv1d_as_linear(model: nn.Module, node: fx.Node) -> tuple[str, nn.Module] | None:
    """``addmm(b, x, W)`` with W, b the parameters of one module (HuggingFace Conv1D): an nn.Linear."""
    bias, weight = node.args[0], node.args[2]
    if len(node.args) > 3 or node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        return None
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr" and _is_attr(bias, _sibling(weight, "bias"))):
        return None
    owner = str(weight.target).rpartition(".")[0]
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return None
    w, b = module.get_parameter("weight"), module.get_parameter("bias")
    linear = nn.Linear(w.shape[0], w.shape[1], device=w.device, dtype=w.dtype)
    with torch.no_grad():
        linear.weight.copy_(w.t())
        linear.bias.copy_(b)
    return owner, linear


def _sibling(node: fx.Node, attr: str) -> str:
    return f"{str(node.target).rpartition('.')[0]}.{attr}"


def _constant_bias_linear(gm: fx.GraphModule, owner: tuple[str, nn.Module], bias: object
                          ) -> tuple[str, nn.Module] | None:
    """``linear(x, W, b)`` with W a Linear's weight and b a constant expression of parameters (Swin V2's
    qkv bias, ``cat(q_bias, 0, v_bias)`` built in forward): an nn.Linear ``<owner>_const_bias`` holding
    copies of W and of b's value, so it is quantized like any Linear (QAT trains the copies, as for
    ``in_proj``); left float, its fp32 GEMM would round differently in every engine."""
    w = owner[1].weight
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (w.shape[0],):
        return None
    return _free_name(gm, f"{owner[0]}_const_bias".replace(".", "_")), _linear_copy(w, bias)


def _in_proj_as_linear(gm: fx.GraphModule, model: nn.Module, node: fx.Node) -> tuple[str, nn.Module] | None:
    """``linear(x, in_proj_weight, in_proj_bias)`` of an ``nn.MultiheadAttention``: an nn.Linear ``<mha>.in_proj``."""
    bias = node.args[2] if len(node.args) > 2 else None
    found = _param_owner(model, node.args[1], nn.MultiheadAttention, "in_proj_weight")
    if found is None:
        return None
    owner, mha = found
    if not (bias is None if mha.in_proj_bias is None else _is_attr(bias, f"{owner}.in_proj_bias")):
        return None
    return _free_name(gm, f"{owner}.in_proj"), _linear_copy(mha.in_proj_weight, mha.in_proj_bias)


def _linear_copy(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear holding copies of ``weight`` (out, in) and ``bias``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _decompose_sdpa(graph: fx.Graph, node: fx.Node) -> None:
    """``scaled_dot_product_attention(q, k, v)`` (no mask, dropout, causality or GQA) as
    ``softmax(matmul(q, kᵀ) · scale) @ v``: two products on int8 codes and a float Softmax."""
    q, k, v = node.args[:3]
    names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    opts = dict(zip(names, node.args[3:], strict=False), **node.kwargs)
    if opts.get("attn_mask") is not None or opts.get("dropout_p", 0.0) or opts.get("is_causal", False) \
            or opts.get("enable_gqa", False):
        return
    scale = opts.get("scale")
    if scale is None:
        val = q.meta.get("val") if isinstance(q, fx.Node) else None
        head = val.shape[-1] if val is not None else None
        if not isinstance(head, int):
            return
        scale = 1.0 / head ** 0.5
    aten = torch.ops.aten
    with graph.inserting_before(node):
        kt = graph.call_function(aten.transpose.int, (k, -2, -1))
        scores = graph.call_function(aten.matmul.default, (q, kt))
        scaled = graph.call_function(aten.mul.Tensor, (scores, float(scale)))
        probs = graph.call_function(aten.softmax.int, (scaled, -1))
        out = graph.call_function(aten.matmul.default, (probs, v))
    out.meta = dict(node.meta)
    node.replace_all_uses_with(out)
    graph.erase_node(node)


def _einsum_as_matmul(graph: fx.Graph, node: fx.Node) -> None:
    """A two-operand ``einsum`` that is a batched matrix product — ``P i k, P k j -> P i j`` or
    ``P i k, P j k -> P i j`` over the same batch letters ``P`` — as ``matmul`` (an integer product)."""
    if len(node.args) < 2 or not isinstance(node.args[0], str) or len(node.args[1]) != 2:
        return
    if len(node.args) > 2 and node.args[2] is not None:
        return
    eq = node.args[0].replace(" ", "")
    if "->" not in eq or "." in eq:
        return
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    if len(terms) != 2:
        return
    a, b = terms
    n = len(out)
    if not (n >= 2 and len(a) == len(b) == n and len(set(a + b)) == n + 1 and a[:-2] == b[:-2] == out[:-2]):
        return
    i, j = out[-2], out[-1]
    x, y = node.args[1]
    aten = torch.ops.aten
    with graph.inserting_before(node):
        if a[-2] == i and a[-1] == b[-2] and b[-1] == j and a[-1] not in out:  # P i k, P k j
            new = graph.call_function(aten.matmul.default, (x, y))
        elif a[-2] == i and b[-2] == j and a[-1] == b[-1] and a[-1] not in out:  # P i k, P j k
            new = graph.call_function(aten.matmul.default, (x, graph.call_function(aten.transpose.int, (y, -2, -1))))
        else:
            return
    new.meta = dict(node.meta)
    node.replace_all_uses_with(new)
    graph.erase_node(node)
