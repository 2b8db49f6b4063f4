"""Prepare a float model for quantization (DESIGN.md §5).

1. capture with torch.export (quant/capture.py); where it cannot, an error naming the
   module and line, or (``float_fallback``) torch.fx with untraceable submodules as float leaves;
2. fold Conv-BN, fuse Conv/Linear + ReLU/ReLU6, swap in QuantConv2d / QuantLinear;
3. put one activation quantizer on every tensor edge the int8 graph needs:
   inputs of Conv/Linear/matmul/add/cat that are not already quantized, and the
   outputs of those ops. Max-pool, flatten, reshape, ReLU... keep their input's grid
   exactly; average pools keep it but must round again, so they call the same
   quantizer with ``observe=False``. Everything else (LayerNorm, GELU, softmax, ...)
   runs in float on dequantized values. Which op is which: quant/policy.py.

The result is a GraphModule whose every FakeQuantize is reachable by name.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from quant import policy
from quant.capture import CaptureError, capture
from quant.errors import QuantError
from quant.fake_quant import FakeQuantize
from quant.float_ops import mirror_float_ops
from quant.fuse import activation_of, fold_batchnorms, is_module, is_tensor_node, set_module, sole_user
from quant.modules import (
    QuantAdd,
    QuantAvgPool2d,
    QuantConv1d,
    QuantConv2d,
    QuantGlobalMean,
    QuantLinear,
    QuantMatMul,
    QuantWeighted,
)
from quant.observers import Observer
from quant.qat import swap_conv_bn
from quant.spec import ACT_INT8, ACT_UINT8, WEIGHT_INT8_PER_CHANNEL, QuantSpec
from quant.trace import example_shapes, trace


@dataclass
class QConfig:
    """What to quantize how. ``observer`` builds the activation observer for a layer name."""

    activation: QuantSpec = ACT_UINT8
    weight: QuantSpec = WEIGHT_INT8_PER_CHANNEL
    observer: Callable[[str], Observer] = field(default=None)  # type: ignore[assignment]
    learnable_scales: bool = False
    skip: frozenset[str] = frozenset()  # module names left in float
    # Residual adds on the int8 grid (CNNs: the whole graph stays integer). Transformers'
    # residual streams carry outlier features that one uint8 grid cannot hold: measured
    # on MiniLM-L6, int8 adds cost 0.08 of embedding cosine; float adds keep 0.95.
    quantize_adds: bool = True

    @staticmethod
    def activation_spec(dtype: str) -> QuantSpec:
        specs = {"uint8": ACT_UINT8, "int8": ACT_INT8}
        if dtype not in specs:
            raise QuantError(f"activation dtype must be one of {sorted(specs)}, got {dtype!r}")
        return specs[dtype]


# --- how each op treats quantization: quant/policy.py ------------------------------------
def classify(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """'weighted' | 'add' | 'cat' | 'matmul' | 'exact' | 'requant' | 'float' | 'io' (quant/policy.py)."""
    if node.op in ("placeholder", "get_attr", "output"):
        return "io"
    if node.op == "call_module":
        m = modules[node.target]  # type: ignore[index]
        if isinstance(m, QuantWeighted):
            return policy.WEIGHTED
        if isinstance(m, QuantAdd):
            return policy.ADD
        if isinstance(m, QuantMatMul):
            return policy.MATMUL
        return policy.module_kind(m)
    if node.op == "call_function":
        kind = policy.function_kind(node.target)
    elif node.op == "call_method":
        kind = policy.method_kind(str(node.target))
    else:
        return policy.FLOAT
    tensor_args = [a for a in node.args if is_tensor_node(a)]
    if kind == policy.ADD and not (len(tensor_args) == 2 and _same_shape(*tensor_args)
                                   and node.kwargs.get("alpha", 1) == 1):
        return policy.FLOAT
    if kind == policy.MATMUL and len(tensor_args) != 2:
        return policy.FLOAT
    return kind


def global_mean_dims(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[tuple[int, ...], bool] | None:
    """(reduced dims, keepdim) when ``node`` averages whole dimensions (not the batch), else None."""
    rank = len(node.args[0].meta["tensor_meta"].shape) if is_tensor_node(node.args[0]) else 0
    if node.op == "call_module" and isinstance(modules[node.target], nn.AdaptiveAvgPool2d):  # type: ignore[index]
        size = modules[node.target].output_size  # type: ignore[index,union-attr]
        return ((rank - 2, rank - 1), True) if size in (1, (1, 1), [1, 1]) else None
    name = policy.aten_name(node.target) if node.op == "call_function" else None
    if node.target is F.adaptive_avg_pool2d or name == "aten::adaptive_avg_pool2d":
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return ((rank - 2, rank - 1), True) if size in (1, (1, 1), [1, 1]) else None
    is_mean = node.target is torch.mean or name == "aten::mean" if node.op == "call_function" else node.target == "mean"
    if is_mean and node.op in ("call_function", "call_method"):
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keepdim = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
        if dim is None or not rank or node.kwargs.get("dtype") is not None:
            return None
        dims = tuple(sorted(d % rank for d in ([dim] if isinstance(dim, int) else dim)))
        return (dims, keepdim) if 0 not in dims else None
    return None


def avg_pool2d_args(node: fx.Node, modules: dict[str, nn.Module]) -> tuple | None:
    """(kernel, stride, padding, ceil_mode, count_include_pad) of a 4-D ``avg_pool2d``; None for
    anything else (a divisor override, which ONNX's AveragePool cannot express, stays as it was)."""
    if not is_tensor_node(node.args[0]) or len(node.args[0].meta["tensor_meta"].shape) != 4:
        return None
    if node.op == "call_module":
        m = modules[node.target]  # type: ignore[index]
        if type(m) is not nn.AvgPool2d or m.divisor_override:
            return None
        return m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad
    name = policy.aten_name(node.target) if node.op == "call_function" else None
    if node.op != "call_function" or not (node.target is F.avg_pool2d or name == "aten::avg_pool2d"):
        return None
    names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    defaults = (None, None, 0, False, True, None)
    values = [node.args[i + 1] if len(node.args) > i + 1 else node.kwargs.get(k, d)
              for i, (k, d) in enumerate(zip(names, defaults, strict=True))]
    if values[5] is not None or any(isinstance(v, fx.Node) for v in values):
        return None
    return tuple(values[:5])


def _same_shape(a: fx.Node, b: fx.Node) -> bool:
    """Residual adds join two tensors of one shape; broadcasts (bias adds, masks) stay float."""
    return tuple(a.meta["tensor_meta"].shape) == tuple(b.meta["tensor_meta"].shape)


# --- the passes ------------------------------------------------------------------------
def swap_weighted(gm: fx.GraphModule, qconfig: QConfig) -> None:
    """Conv2d/Conv1d/Linear (+ReLU/ReLU6 as sole user) → QuantConv2d/QuantConv1d/QuantLinear, fused activation."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if not is_module(node, modules, (nn.Conv2d, nn.Conv1d, nn.Linear)) or skipped(node, qconfig.skip):
            continue
        name = str(node.target)
        user = sole_user(node)
        act = activation_of(user, modules) if user is not None else None
        if act is not None:
            user.replace_all_uses_with(node)
            gm.graph.erase_node(user)
        float_mod = modules[name]
        if isinstance(float_mod, nn.Conv2d):
            q: nn.Module = QuantConv2d(float_mod, qconfig.weight, act, name)
        elif isinstance(float_mod, nn.Conv1d):
            q = QuantConv1d(float_mod, qconfig.weight, act, name)
        else:
            q = QuantLinear(float_mod, qconfig.weight, act, name)
        set_module(gm, name, q)
    gm.graph.lint()


def skipped(node: fx.Node, skip: frozenset[str]) -> bool:
    """True when ``node`` is, or runs inside, a module the user keeps float."""
    if not skip:
        return False
    paths = [str(node.target)] if node.op == "call_module" else []
    paths += [path for path, _ in node.meta.get("nn_module_stack", {}).values()]
    return any(p == s or p.startswith(s + ".") for p in paths for s in skip)


def _label(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    if node.op == "placeholder":
        return f"input '{node.target}'"
    return node.name


class _Inserter:
    """Walks the graph once, tracking which quantizer describes each tensor."""

    def __init__(self, gm: fx.GraphModule, qconfig: QConfig) -> None:
        self.gm = gm
        self.qc = qconfig
        self.grid: dict[fx.Node, str] = {}  # node -> name of the FakeQuantize whose grid its value lies on
        self.input_quant: dict[fx.Node, fx.Node] = {}  # float source -> its quantizer node
        self.count = 0

    def _new_quantizer(self, label: str) -> str:
        name = f"act_quant_{self.count}"
        self.count += 1
        fq = FakeQuantize(self.qc.activation, self.qc.observer(label), name=label,
                          learnable=self.qc.learnable_scales)
        self.gm.add_submodule(name, fq)
        return name

    def quantize_edge(self, src: fx.Node, consumer: fx.Node) -> fx.Node:
        """The quantized version of ``src`` for ``consumer`` (shared among consumers)."""
        if src in self.grid:
            return src
        if src not in self.input_quant:
            name = self._new_quantizer(f"{_label(consumer)} input ({_label(src)})")
            with self.gm.graph.inserting_after(src):
                q = self.gm.graph.call_module(name, (src,))
            q.meta = dict(src.meta)  # same tensor, same shape: later ops classify on it
            self.grid[q] = name
            self.input_quant[src] = q
        return self.input_quant[src]

    def quantize_output(self, node: fx.Node) -> str:
        name = self._new_quantizer(f"{_label(node)} output")
        with self.gm.graph.inserting_after(node):
            q = self.gm.graph.call_module(name, (node,))
        q.meta = dict(node.meta)
        node.replace_all_uses_with(q, delete_user_cb=lambda u: u is not q)
        self.grid[q] = name
        return name

    def attrs(self, quantizer: str, before: fx.Node, *names: str) -> list[fx.Node]:
        """get_attr nodes for buffers of ``quantizer`` (scale, zero_point, ...), placed before ``before``."""
        with self.gm.graph.inserting_before(before):
            return [self.gm.graph.get_attr(f"{quantizer}.{n}") for n in names]

    def quantized_binary(self, node: fx.Node, cls: type[QuantAdd] | type[QuantMatMul]) -> None:
        """Replace ``a + b`` / ``a @ b`` by a module that knows all three grids (exact int8 arithmetic in eval)."""
        a, b = (self.quantize_edge(x, node) for x in node.args[:2])
        qargs = [*self.attrs(self.grid[a], node, "scale", "zero_point"),
                 *self.attrs(self.grid[b], node, "scale", "zero_point")]
        new = self.replace_with_module(node, cls(self.qc.activation), (a, b, *qargs))
        out = self.quantize_output(new)
        new.args = (*new.args, *self.attrs(out, new, "scale", "zero_point", "quant_enabled"))

    def exact_global_mean(self, node: fx.Node, src: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
        """Replace a global mean / 1×1 adaptive pool of a quantized tensor by QuantGlobalMean."""
        found = global_mean_dims(node, modules)
        if found is None:
            return None
        dims, keepdim = found
        qargs = self.attrs(self.grid[src], node, "scale", "zero_point", "quant_enabled")
        return self.replace_with_module(node, QuantGlobalMean(dims, keepdim, self.qc.activation), (src, *qargs))

    def exact_avg_pool(self, node: fx.Node, src: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
        """Replace a 2-D average pool of a quantized tensor by QuantAvgPool2d (QLinearAveragePool's arithmetic)."""
        found = avg_pool2d_args(node, modules)
        if found is None:
            return None
        qargs = self.attrs(self.grid[src], node, "scale", "zero_point", "quant_enabled")
        return self.replace_with_module(node, QuantAvgPool2d(*found, spec=self.qc.activation), (src, *qargs))

    def replace_with_module(self, node: fx.Node, module: nn.Module, args: tuple) -> fx.Node:
        """Put ``module`` (named after ``node``: "add_1", "matmul", the label its quantizers and
        errors show) in ``node``'s place, called with ``args``."""
        name = node.name
        while hasattr(self.gm, name):
            name += "_q"
        self.gm.add_submodule(name, module)
        with self.gm.graph.inserting_before(node):
            new = self.gm.graph.call_module(name, args)
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)
        return new

    def run(self) -> None:
        modules = dict(self.gm.named_modules())
        for node in list(self.gm.graph.nodes):
            if node in self.grid:  # a quantizer we inserted
                continue
            kind = classify(node, modules)
            if kind in (policy.ADD, policy.MATMUL, policy.CAT) and skipped(node, self.qc.skip):
                continue
            if kind == "weighted":
                x = self.quantize_edge(node.args[0], node)
                (in_scale,) = self.attrs(self.grid[x], node, "scale")
                if not self.qc.quantize_adds and _feeds_only_adds(node, modules):
                    # float residual stream: the int32 accumulator is dequantized straight into the
                    # float add (an int8 grid here would only add error before a float op)
                    node.args = (x, in_scale)
                    continue
                out = self.quantize_output(node)
                modules[node.target].output_spec = self.qc.activation  # type: ignore[index,union-attr]
                node.args = (x, in_scale, *self.attrs(out, node, "scale", "zero_point"))
            elif kind == "add" and self.qc.quantize_adds:
                self.quantized_binary(node, QuantAdd)
            elif kind == "matmul":
                self.quantized_binary(node, QuantMatMul)
            elif kind == "cat":
                seq = node.args[0]
                node.args = ([self.quantize_edge(a, node) for a in seq], *node.args[1:])
                self.quantize_output(node)
            elif kind == "exact":
                src = node.args[0] if node.args else None
                if isinstance(src, fx.Node) and src in self.grid:
                    self.grid[node] = self.grid[src]
            elif kind == "requant":
                src = node.args[0] if node.args else None
                if isinstance(src, fx.Node) and src in self.grid:
                    name = self.grid[src]
                    node = (self.exact_global_mean(node, src, modules) or self.exact_avg_pool(node, src, modules)
                            or node)
                    with self.gm.graph.inserting_after(node):
                        q = self.gm.graph.call_module(name, (node,), {"observe": False})
                    q.meta = dict(node.meta)
                    node.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)
                    self.grid[q] = name


def _feeds_only_adds(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True when every use of ``node`` (through exact ops such as dropout) is a residual add."""
    users = list(node.users)
    for user in users:
        kind = classify(user, modules)
        if kind == policy.EXACT and len(user.args) and user.args[0] is node:
            if not _feeds_only_adds(user, modules):
                return False
        elif kind != policy.ADD:
            return False
    return bool(users)


def prepare(
    model: nn.Module,
    example_inputs: tuple,
    qconfig: QConfig,
    *,
    example_kwargs: dict | None = None,
    float_fallback: bool = False,
    fold_bn: bool = True,
    qat: bool = False,
) -> fx.GraphModule:
    """A fake-quant copy of ``model`` (the input model is never modified).

    The graph is captured with torch.export (quant/capture.py); a model it cannot capture
    raises a QuantError naming the module and line, or with ``float_fallback`` is traced
    with torch.fx, untraceable submodules left float. ``qat=True`` keeps each Conv→BN pair
    trainable as a QuantConvBn2d (BN folded on the fly, quant/qat.py) instead of folding
    it once with today's statistics. The result is called like ``model``.
    """
    model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    for name in qconfig.skip:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise QuantError(f"skip names unknown module '{name}'") from None
    gm = _capture_graph(model, example_inputs, example_kwargs or {}, qconfig, float_fallback)
    if qat:
        swap_conv_bn(gm, qconfig.weight, qconfig.skip)
    if fold_bn:
        fold_batchnorms(gm)
    swap_weighted(gm, qconfig)
    example_shapes(gm, example_inputs, example_kwargs)
    _Inserter(gm, qconfig).run()
    mirror_float_ops(gm)
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()  # folded BNs, fused ReLUs
    if not list(quantizers(gm)):
        warnings.warn("no quantizable op (Conv2d, Linear, matmul, add, cat) found: the model stays float",
                      stacklevel=2)
    gm.train(was_training)
    return gm


def _capture_graph(
    model: nn.Module, args: tuple, kwargs: dict, qconfig: QConfig, float_fallback: bool
) -> fx.GraphModule:
    """torch.export capture; with ``float_fallback``, torch.fx with float leaves where export fails."""
    try:
        return capture(model, args, kwargs)
    except CaptureError as exc:
        if not float_fallback:
            raise
        warnings.warn(f"{exc}; tracing with torch.fx instead", stacklevel=4)
    return trace(model, float_fallback=True, leaves=set(qconfig.skip))


def quantizers(model: nn.Module):
    """(name, FakeQuantize) for every quantizer in the model, activations and weights."""
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantize):
            yield name, m
