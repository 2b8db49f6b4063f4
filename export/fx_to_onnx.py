"""Walk a fake-quant torch.fx graph and build the QDQ ONNX graph it simulates.

The walk has two phases so that nothing is half-done when a model cannot be
exported: ``unsupported`` lists every node without a converter (and every
quantizer that cannot be expressed), and only then are nodes converted. Converters
that find a bad argument also add to one list, reported together.
"""

from __future__ import annotations

import copy
from typing import Any

import onnx
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from export import ops
from export.builder import GraphBuilder
from export.context import TORCH_TO_ONNX, ExportContext
from export.errors import OnnxExportError
from export.quant_ops import (
    check_activation_quantizer,
    convert_fake_quantize,
    convert_global_mean,
    convert_weighted,
)
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.modules import QuantAdd, QuantGlobalMean, QuantMatMul, QuantWeighted
from quant.prepare import classify

# fx ops whose inputs the int8 graph consumes as quantized tensors (DESIGN.md §5)
INT8_INPUT_KINDS = ("weighted", "add", "cat", "matmul")


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "call_method":
        return f"{node.name} (method .{node.target}())"
    name = getattr(node.target, "__name__", str(node.target))
    module = getattr(node.target, "__module__", None)
    return f"{node.name} (function {module}.{name})" if module else f"{node.name} (function {name})"


def module_converter(mod: nn.Module) -> Any:
    if isinstance(mod, FakeQuantize) and not isinstance(mod, WeightFakeQuantize):
        return convert_fake_quantize
    if isinstance(mod, QuantWeighted):
        return convert_weighted
    if isinstance(mod, QuantAdd):  # its inputs are already DQ outputs: a plain Add between Q/DQ
        return lambda cx, node, _mod: ops.ADD(cx, node)
    if isinstance(mod, QuantMatMul):
        return lambda cx, node, _mod: ops.MATMUL(cx, node)
    if isinstance(mod, QuantGlobalMean):
        return convert_global_mean
    return ops.MODULES.get(type(mod))


def unsupported(gm: fx.GraphModule) -> list[str]:
    """Every node the exporter cannot write, described by name and type."""
    modules = dict(gm.named_modules())
    bad: list[str] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules[node.target]
            if module_converter(mod) is None:
                bad.append(_describe(node, modules))
            elif isinstance(mod, FakeQuantize) and (why := check_activation_quantizer(mod, str(node.target))):
                bad.append(why)
        elif node.op == "call_function" and node.target not in ops.FUNCTIONS:
            bad.append(_describe(node, modules))
        elif node.op == "call_method" and node.target not in ops.METHODS:
            bad.append(_describe(node, modules))
    return bad


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module" and isinstance(modules[node.target], QuantWeighted):
        return "weighted"  # QAT's conv+BN modules are QuantWeighted without being QuantConv2d
    return classify(node, modules)


def _elem_type(node: fx.Node) -> int:
    dtype = node.meta["tensor_meta"].dtype
    if dtype not in TORCH_TO_ONNX:
        raise OnnxExportError(f"'{node.name}': dtype {dtype} is not exported")
    return TORCH_TO_ONNX[dtype]


def _io_shape(node: fx.Node, dynamic_batch: bool) -> list[int | str]:
    shape: list[int | str] = list(ExportContext.shape(node))
    if dynamic_batch and shape:
        shape[0] = "batch"
    return shape


def prepared_copy(qmodel: fx.GraphModule, example_inputs: tuple) -> fx.GraphModule:
    """A copy with observation off and shapes recorded, so exporting never changes the model.

    Activation observers still running (e.g. a QAT model not yet frozen) would move the
    scales on every forward; the file captures the scales as they are now.
    """
    gm = copy.deepcopy(qmodel).eval()
    for m in gm.modules():
        if isinstance(m, FakeQuantize) and not isinstance(m, WeightFakeQuantize):
            m.observe_enabled.fill_(0)
    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    return gm


def build_qdq(qmodel: nn.Module, example_inputs: tuple, opset: int, dynamic_batch: bool) -> onnx.ModelProto:
    """The QDQ ONNX model of ``qmodel`` (before clean-up); raises OnnxExportError listing every problem."""
    if not isinstance(qmodel, fx.GraphModule):
        raise OnnxExportError(
            f"export needs the torch.fx GraphModule returned by compress.quantize or prepare_qat, "
            f"got {type(qmodel).__name__}"
        )
    gm = prepared_copy(qmodel, example_inputs)
    problems = unsupported(gm)
    if problems:
        raise OnnxExportError(_report(problems))
    cx = ExportContext(
        gm=gm, builder=GraphBuilder(opset), dynamic_batch=dynamic_batch, modules=dict(gm.named_modules())
    )
    for node in gm.graph.nodes:
        try:
            _convert(cx, node)
        except OnnxExportError as exc:
            problems.append(
                f"{_describe(node, cx.modules)}: {exc}" if node.op.startswith("call") else str(exc)
            )
            cx.env[node] = node.name  # keep walking to find every problem
    if problems:
        raise OnnxExportError(_report(problems))
    return cx.builder.model(type(qmodel).__name__)


def _report(problems: list[str]) -> str:
    lines = "\n".join(f"  - {p}" for p in problems)
    return (
        f"cannot export to ONNX: {len(problems)} unsupported module(s)/op(s); nothing was written:\n{lines}"
    )


def _convert(cx: ExportContext, node: fx.Node) -> None:
    b = cx.builder
    if node.op == "placeholder":
        b.add_input(node.name, _elem_type(node), _io_shape(node, cx.dynamic_batch))
        cx.env[node] = node.name
        return
    if node.op == "get_attr":
        owner, _, attr = str(node.target).rpartition(".")
        value = getattr(cx.gm.get_submodule(owner) if owner else cx.gm, attr)
        cx.env[node] = (
            b.initializer(value.detach().cpu().numpy(), str(node.target))
            if isinstance(value, torch.Tensor)
            else value
        )
        return
    if node.op == "output":
        _outputs(cx, node.args[0])
        return
    kind = _kind(node, cx.modules)
    if kind in INT8_INPUT_KINDS:  # make every quantized input a DQ output (see dequantized_input)
        for a in node.args[0] if kind == "cat" else node.args:
            if isinstance(a, fx.Node) and a in cx.grid:
                cx.env[a] = cx.dequantized_input(a)
    if node.op == "call_module":
        mod = cx.modules[node.target]
        cx.env[node] = module_converter(mod)(cx, node, mod)
    elif node.op == "call_function":
        cx.env[node] = ops.FUNCTIONS[node.target](cx, node)
    else:
        cx.env[node] = ops.METHODS[node.target](cx, node)
    if kind == "exact" and node.args and isinstance(node.args[0], fx.Node) and node.args[0] in cx.grid:
        cx.grid[node] = cx.grid[node.args[0]]


def _outputs(cx: ExportContext, result: Any) -> None:
    """Graph outputs: one tensor, or a tuple/list of them, named output / output_i."""
    nodes = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, n in enumerate(nodes):
        if not isinstance(n, fx.Node) or not isinstance(cx.env.get(n), str):
            raise OnnxExportError(
                f"model output {i} is not a tensor ({type(n).__name__}); only tensors are exported"
            )
        name = "output" if len(nodes) == 1 else f"output_{i}"
        cx.builder.nodes.append(
            onnx.helper.make_node("Identity", [cx.env[n]], [name], name=f"{name}/Identity")
        )
        cx.builder.add_output(name, _elem_type(n), _io_shape(n, cx.dynamic_batch))
