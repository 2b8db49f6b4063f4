"""Clean-up passes over an ONNX model, each a small function ModelProto → ModelProto (in place).

- ``fold_constants``: a node whose inputs are all initializers is evaluated once and
  replaced by its result. QuantizeLinear/DequantizeLinear are never folded: DQ of the
  int8 weights *is* the quantized model (folding it would store fp32 weights again).
- ``cancel_redundant_qdq``: DequantizeLinear → QuantizeLinear with identical scale,
  zero point and axis returns the codes it was given, so the Q's users read the DQ's
  input directly.
- ``remove_dead_nodes``: nodes that no graph output depends on, and initializers no
  node reads, are dropped.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
NOT_FOLDED = {
    *QDQ_OPS,
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def initializer_map(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in graph.initializer}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name → nodes that read it."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                users.setdefault(i, []).append(n)
    return users


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node reading ``old`` reads ``new`` instead."""
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i == old:
                n.input[k] = new


def remove_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop nodes no graph output depends on, then initializers nothing reads."""
    g = model.graph
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(g.node):  # nodes are in topological order
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    return model


def _same_qparams(a: onnx.NodeProto, b: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """Scale, zero point (values and type) and axis of two Q/DQ nodes are identical."""
    if _axis(a) != _axis(b) or len(a.input) != len(b.input):
        return False
    for x, y in zip(a.input[1:], b.input[1:], strict=True):
        if x == y:
            continue
        if x not in inits or y not in inits:
            return False
        tx, ty = inits[x], inits[y]
        if tx.data_type != ty.data_type or not np.array_equal(
            numpy_helper.to_array(tx), numpy_helper.to_array(ty)
        ):
            return False
    return True


def _axis(n: onnx.NodeProto) -> int:
    return next((a.i for a in n.attribute if a.name == "axis"), 1)


def cancel_redundant_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """DQ → Q with identical parameters is the identity on codes: bypass the pair."""
    g = model.graph
    inits = initializer_map(g)
    made = producers(g)
    outputs = {o.name for o in g.output}
    for q in list(g.node):
        if q.op_type != "QuantizeLinear" or q.output[0] in outputs:
            continue
        dq = made.get(q.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or not _same_qparams(dq, q, inits):
            continue
        rename_input(g, q.output[0], dq.input[0])
    return remove_dead_nodes(model)


def _evaluate(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opsets: list) -> list[np.ndarray]:
    """Run one node with the ONNX reference implementation."""
    graph = helper.make_graph(
        [node],
        "fold",
        [
            helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in inputs.items()
        ],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
    )
    return ReferenceEvaluator(helper.make_model(graph, opset_imports=opsets)).run(None, inputs)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate every node whose inputs are all initializers (Q/DQ and random ops excepted)."""
    g = model.graph
    opsets = list(model.opset_import)
    inits = initializer_map(g)
    kept: list[onnx.NodeProto] = []
    for n in g.node:
        foldable = (
            n.domain in ("", "ai.onnx")
            and n.op_type not in NOT_FOLDED
            and n.input
            and all(i in inits for i in n.input if i)
        )
        if not foldable:
            kept.append(n)
            continue
        values = {i: numpy_helper.to_array(inits[i]) for i in n.input if i}
        try:
            results = _evaluate(n, values, opsets)
        except Exception:  # the reference implementation fails on some ops (GatherElements): runtimes compute it
            kept.append(n)
            continue
        for name, value in zip(n.output, results, strict=True):
            tensor = numpy_helper.from_array(np.asarray(value), name)
            g.initializer.append(tensor)
            inits[name] = tensor
    del g.node[:]
    g.node.extend(kept)
    return remove_dead_nodes(model)


def clean(model: onnx.ModelProto) -> onnx.ModelProto:
    """All passes, in the order that lets each expose work for the next."""
    return remove_dead_nodes(cancel_redundant_qdq(fold_constants(model)))
