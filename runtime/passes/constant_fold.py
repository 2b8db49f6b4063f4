"""Constant folding: a node whose inputs are all constants is run once at load and its
outputs become constants (Constant nodes included)."""

from __future__ import annotations

from runtime.graph import Graph
from runtime.ops.registry import RunOptions, lookup


def constant_fold(graph: Graph, skip: set[str] | frozenset[str] = frozenset()) -> Graph:
    """Folds every foldable node, in order, so chains of constants fold in one pass.

    ``skip`` names op types to keep (the first run keeps DequantizeLinear so the integer
    fold still sees int8 weights).  Nodes without a kernel are left for the session to
    report."""
    kept = []
    for node in graph.nodes:
        factory = lookup(node)
        if (
            node.op_type in skip
            or factory is None
            or any(i and i not in graph.constants for i in node.inputs)
        ):
            kept.append(node)
            continue
        values = factory(node, graph, RunOptions())(*[graph.constants[i] if i else None for i in node.inputs])
        for name, value in zip(node.outputs, values, strict=False):
            if name:
                graph.constants[name] = value
    graph.nodes = kept
    return graph
