"""The runtime's internal graph: ONNX nodes in topological order, tensors by name,
constants as numpy arrays.  Small on purpose: passes rewrite it, kernels read it."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.errors import InferenceError

MS_DOMAIN = "com.microsoft"


@dataclass
class ValueInfo:
    """A graph input or output as onnxruntime's NodeArg shows it: name, shape, type string."""

    name: str
    shape: list[int | str | None]
    type: str


@dataclass
class Node:
    """One operator.  Empty strings in ``inputs`` stand for omitted optional inputs, as in ONNX."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """Registry key: (domain, op type), with ``ai.onnx`` spelled as the empty domain."""
        return ("" if self.domain in ("", "ai.onnx") else self.domain, self.op_type)

    def describe(self) -> str:
        return f"node {self.name!r} ({self.op_type})"


@dataclass
class Graph:
    """Nodes in topological order plus constant tensors, the graph's inputs and outputs."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    source: str = "<bytes>"
    opsets: dict[str, int] = field(default_factory=dict)
    """Opset version per domain ('' for ai.onnx): schema defaults depend on it."""

    def producers(self) -> dict[str, Node]:
        """Tensor name -> the node that writes it."""
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> nodes that read it (a node reading a tensor twice appears twice)."""
        readers: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    readers.setdefault(name, []).append(node)
        return readers

    def output_names(self) -> set[str]:
        return {v.name for v in self.outputs}

    def const(self, name: str) -> np.ndarray | None:
        """The constant value of a tensor, or None when it is computed at run time."""
        return self.constants.get(name) if name else None

    def fresh_name(self, base: str) -> str:
        """A tensor or node name not used anywhere in the graph yet."""
        taken = set(self.constants) | {v.name for v in self.inputs}
        for node in self.nodes:
            taken.update(node.inputs)
            taken.update(node.outputs)
            taken.add(node.name)
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        return name

    def toposort(self) -> None:
        """Reorders nodes so each follows the producers of its inputs; rejects cycles and reads
        of tensors nothing produces (see :func:`topological_order`)."""
        available = set(self.constants) | {v.name for v in self.inputs} | {""}
        order, missing, stuck = topological_order([(n.inputs, n.outputs) for n in self.nodes], available)
        if missing:
            raise InferenceError(f"{self.source}: graph reads undefined tensors {sorted(missing)[:5]}")
        if stuck:
            names = ", ".join(self.nodes[i].describe() for i in stuck[:5])
            raise InferenceError(f"{self.source}: graph has a cycle through {names}")
        self.nodes = [self.nodes[i] for i in order]


def topological_order(
    nodes: Sequence[tuple[Sequence[str], Sequence[str]]], available: set[str]
) -> tuple[list[int], set[str], list[int]]:
    """(order, tensors nothing produces, nodes on or behind a cycle) of nodes given as
    (inputs, outputs).  Kahn's algorithm, earliest node first: linear in the graph's size (a
    hostile file with a million nodes sorts in seconds, not hours), and a graph already in
    order keeps its order."""
    producer: dict[str, int] = {}
    for idx, (_, outputs) in enumerate(nodes):
        for out in outputs:
            if out and out not in available:
                producer.setdefault(out, idx)
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    missing: set[str] = set()
    for idx, (inputs, _) in enumerate(nodes):
        sources = {producer[i] for i in inputs if i not in available and i in producer}
        missing.update(i for i in inputs if i not in available and i not in producer)
        waiting[idx] = len(sources)
        for src in sources:
            readers.setdefault(src, []).append(idx)
    ready = [idx for idx, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(idx)
        for reader in readers.get(idx, ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    stuck = [i for i, n in enumerate(waiting) if n > 0]
    return order, missing, stuck
