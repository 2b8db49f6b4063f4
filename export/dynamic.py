"""Export of dynamic int8 models: DynamicQuantizeLinear + MatMulInteger, ONNX's standard form.

Each :class:`quant.dynamic.DynamicLinear`'s MatMul/Gemm in the float export becomes
``DynamicQuantizeLinear(x) -> MatMulInteger(q_x, W_int8, z_x) -> Cast -> Mul(s_x·s_w)``
(+ Add(bias)), the pattern ONNX Runtime fuses into its DynamicQuantizeMatMul kernel and the
bundled runtime runs on its integer GEMM; the weights are stored as int8 (K, N).

Per-token layers (``granularity="per_token"``) quantize each row with DynamicQuantizeLinear's
formulas written out in standard ops (ReduceMin/ReduceMax over the last axis, keepdims), then
``MatMulInteger(q, W_int8)`` without a zero point (ONNX Runtime's accepts only a scalar one),
``acc − z_row·colsum(W)`` in int32, Cast, Mul(s_row·s_w): exact, and run by both engines.

Dynamic int8 LSTM / GRU layers (quant.dynamic_rnn) are rewritten by export/dynamic_rnn.py:
LSTM nodes into com.microsoft DynamicQuantizeLSTM, GRU nodes into unrolled standard ops.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from export.api import check
from export.atomic import write_atomic
from export.builder import MS_DOMAIN
from export.dynamic_rnn import float_rnn_twin, rewrite_recurrent
from export.errors import OnnxExportError
from export.weight_only import LinearSite, export_float_model, float_twin, replace_sites
from quant.dynamic import DynamicLinear


def _const(graph: onnx.GraphProto, name: str, value, dtype) -> str:
    """A scalar (or 1-D) constant initializer, shared by name."""
    if not any(t.name == name for t in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
    return name


def _per_token_nodes(x: str, p: str, w: str, ws: str, colsum: str, out: str, graph: onnx.GraphProto,
                     opset: int) -> list:
    """DynamicQuantizeLinear per row (last axis) + MatMulInteger + int32 zero-point correction."""
    if opset >= 18:  # ReduceMin/ReduceMax take their axes as an input from opset 18
        reduce_in, reduce_kw = [x, _const(graph, "dyn_token/last_axis", [-1], np.int64)], {}
    else:
        reduce_in, reduce_kw = [x], {"axes": [-1]}
    zero = _const(graph, "dyn_token/zero", 0.0, np.float32)
    one = _const(graph, "dyn_token/one", 1.0, np.float32)
    levels = _const(graph, "dyn_token/255", 255.0, np.float32)
    n = helper.make_node
    return [
        n("ReduceMin", reduce_in, [p + "rmin"], name=p + "ReduceMin", keepdims=1, **reduce_kw),
        n("ReduceMax", reduce_in, [p + "rmax"], name=p + "ReduceMax", keepdims=1, **reduce_kw),
        n("Min", [p + "rmin", zero], [p + "lo"], name=p + "lo"),
        n("Max", [p + "rmax", zero], [p + "hi"], name=p + "hi"),
        n("Sub", [p + "hi", p + "lo"], [p + "range"], name=p + "range"),
        n("Div", [p + "range", levels], [p + "s0"], name=p + "s0"),
        n("Greater", [p + "s0", zero], [p + "pos"], name=p + "pos"),
        n("Where", [p + "pos", p + "s0", one], [p + "xs"], name=p + "xs"),
        n("Sub", [zero, p + "lo"], [p + "neglo"], name=p + "neglo"),
        n("Div", [p + "neglo", p + "xs"], [p + "z0"], name=p + "z0"),
        n("Round", [p + "z0"], [p + "z1"], name=p + "z1"),
        n("Clip", [p + "z1", zero, levels], [p + "xz"], name=p + "xz"),
        n("Div", [x, p + "xs"], [p + "v0"], name=p + "v0"),
        n("Round", [p + "v0"], [p + "v1"], name=p + "v1"),
        n("Add", [p + "v1", p + "xz"], [p + "v2"], name=p + "v2"),
        n("Clip", [p + "v2", zero, levels], [p + "v3"], name=p + "v3"),
        n("Cast", [p + "v3"], [p + "xq"], name=p + "xq", to=TensorProto.UINT8),
        n("MatMulInteger", [p + "xq", w], [p + "acc0"], name=p + "MatMulInteger"),
        n("Cast", [p + "xz"], [p + "xzi"], name=p + "xzi", to=TensorProto.INT32),
        n("Mul", [p + "xzi", colsum], [p + "corr"], name=p + "corr"),
        n("Sub", [p + "acc0", p + "corr"], [p + "acc"], name=p + "acc"),
        n("Cast", [p + "acc"], [p + "accf"], name=p + "Cast", to=TensorProto.FLOAT),
        n("Mul", [p + "xs", ws], [p + "scale"], name=p + "scale"),
        n("Mul", [p + "accf", p + "scale"], [out], name=p + "Mul"),
    ]


def _dynamic_nodes(site: LinearSite, name: str, module: DynamicLinear, graph: onnx.GraphProto,
                   opset: int = 17) -> list:
    w = numpy_helper.from_array(np.ascontiguousarray(module.qweight.numpy().T), f"{name}.qweight")
    ws = numpy_helper.from_array(module.weight_scale.numpy().astype(np.float32), f"{name}.weight_scale")
    graph.initializer.extend([w, ws])
    x, p = site.node.input[0], f"{name}/"
    if getattr(module, "granularity", "per_tensor") == "per_token":
        colsum = numpy_helper.from_array(module.qweight.numpy().astype(np.int32).sum(1).astype(np.int32),
                                         f"{name}.qweight_colsum")
        graph.initializer.append(colsum)
        return _per_token_nodes(x, p, w.name, ws.name, colsum.name, site.node.output[0], graph,
                                opset)
    return [
        helper.make_node("DynamicQuantizeLinear", [x], [p + "xq", p + "xs", p + "xz"],
                         name=p + "DynamicQuantizeLinear"),
        helper.make_node("MatMulInteger", [p + "xq", w.name, p + "xz"], [p + "acc"], name=p + "MatMulInteger"),
        helper.make_node("Cast", [p + "acc"], [p + "accf"], name=p + "Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "xs", ws.name], [p + "scale"], name=p + "scale"),
        helper.make_node("Mul", [p + "accf", p + "scale"], [site.node.output[0]], name=p + "Mul"),
    ]


def build_dynamic(
    qmodel: nn.Module, example_inputs: tuple | Mapping[str, torch.Tensor], **export_kwargs
) -> onnx.ModelProto:
    """The checked ONNX model of a dynamic int8 model (Linear, LSTM and GRU layers), in memory."""
    twin, rnn_found = float_rnn_twin(copy.deepcopy(qmodel).eval())
    has_linear = any(isinstance(m, DynamicLinear) for m in twin.modules())
    if not has_linear and not rnn_found:
        raise OnnxExportError(f"{type(qmodel).__name__} holds no dynamic int8 Linear, LSTM or GRU layers")
    found: dict = {}
    if has_linear:
        twin, found = float_twin(twin, (DynamicLinear,), lambda m: m.dequantized_weight())
    model = export_float_model(twin, example_inputs, **export_kwargs)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if found:
        model = replace_sites(model, found, functools.partial(_dynamic_nodes, opset=opset))
    if rnn_found:
        done = rewrite_recurrent(model, rnn_found)
        if missing := sorted({v[0] for v in rnn_found.values()} - done):
            raise OnnxExportError(f"no LSTM/GRU node of the exported graph carries the weights of {missing}")
        used = {i for n in model.graph.node for i in n.input}
        keep = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    check(model)
    return model


def export_dynamic(
    qmodel: nn.Module, path: str | os.PathLike, example_inputs: tuple | Mapping[str, torch.Tensor], **export_kwargs
) -> Path:
    """Write the dynamic int8 ONNX file atomically (``export_kwargs`` as for export_weight_only)."""
    return write_atomic(path, build_dynamic(qmodel, example_inputs, **export_kwargs).SerializeToString())
