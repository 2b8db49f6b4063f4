"""Kernel registry keyed by (domain, ONNX op type), the way the ONNX reference
implementation finds one implementation per op.

A factory receives the node, the graph (to read constant inputs once: weights are packed
here, at load, not per call) and the run options, and returns a callable mapping input
arrays (None for omitted optional inputs) to the list of output arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.graph import Graph, Node

Compute = Callable[..., Sequence[np.ndarray]]
Factory = Callable[[Node, Graph, "RunOptions"], Compute]

_REGISTRY: dict[tuple[str, str], Factory] = {}


@dataclass(frozen=True)
class RunOptions:
    """What every kernel may need besides its node: threads and a forced ISA path."""

    threads: int = 1
    isa: str | None = None


def register(*op_types: str, domain: str = "") -> Callable[[Factory], Factory]:
    """Registers a kernel factory for one or more op types of one domain."""

    def add(factory: Factory) -> Factory:
        for op in op_types:
            _REGISTRY[(domain, op)] = factory
        return factory

    return add


def lookup(node: Node) -> Factory | None:
    return _REGISTRY.get(node.key)


def is_supported(node: Node) -> bool:
    return node.key in _REGISTRY


def elementwise(fn: Callable[..., np.ndarray]) -> Factory:
    """Factory for ops whose output is fn(*inputs) with no attributes."""
    return lambda node, graph, opts: lambda *xs: [fn(*xs)]


def build(node: Node, graph: Graph, opts: RunOptions) -> Compute:
    """The node's compute function.  An fp32 node that kept a fused Relu/Clip (it was not
    folded into an integer op) applies the clamp to its output here."""
    compute = _REGISTRY[node.key](node, graph, opts)
    lo, hi = node.attrs.get("fused_min"), node.attrs.get("fused_max")
    if node.key[0] or node.op_type.startswith("QLinear") or (lo is None and hi is None):
        return compute

    def clamped(*xs):
        y = compute(*xs)
        return [np.clip(y[0], lo, hi).astype(y[0].dtype, copy=False), *y[1:]]

    return clamped
