"""Activation-clamp fusion: Relu or Clip (constant bounds) right after an op that accepts
one (its ``OpSpec.fuses_clamp``: Conv, Gemm, MatMul, Add) moves into that node as
``fused_min`` / ``fused_max``.

Once the node becomes an integer op these are saturation bounds of the requantization
(quantization is monotone, so Q(clip(v)) == clamp(Q(v))); a node that stays in fp32 applies
the clamp to its output (see ops.registry.build)."""

from __future__ import annotations

import numpy as np

from runtime.graph import Graph, Node
from runtime.ops.registry import spec


def clamp_range(node: Node, graph: Graph) -> tuple[float | None, float | None] | None:
    """(min, max) of a Relu or constant-bound Clip, None for anything else."""
    if node.key == ("", "Relu"):
        return 0.0, None
    if node.key != ("", "Clip"):
        return None
    bounds = []
    for i, attr in ((1, "min"), (2, "max")):
        name = node.inputs[i] if i < len(node.inputs) else ""
        if name:
            value = graph.const(name)
            if value is None:
                return None
            bounds.append(float(np.asarray(value).reshape(())))
        else:
            bounds.append(node.attrs.get(attr))
    return bounds[0], bounds[1]


def fuse_clamps(graph: Graph) -> Graph:
    consumers, outputs = graph.consumers(), graph.output_names()
    removed: set[int] = set()
    for node in graph.nodes:
        op = spec(node)
        if op is None or not op.fuses_clamp or node.outputs[0] in outputs:
            continue
        readers = consumers.get(node.outputs[0], [])
        if len(readers) != 1 or (bounds := clamp_range(readers[0], graph)) is None:
            continue
        lo, hi = bounds
        old_lo, old_hi = node.attrs.get("fused_min"), node.attrs.get("fused_max")
        node.attrs["fused_min"] = lo if old_lo is None else (old_lo if lo is None else max(lo, old_lo))
        node.attrs["fused_max"] = hi if old_hi is None else (old_hi if hi is None else min(hi, old_hi))
        node.outputs[0] = readers[0].outputs[0]
        removed.add(id(readers[0]))
        consumers = graph.consumers()
    graph.nodes = [n for n in graph.nodes if id(n) not in removed]
    return graph
