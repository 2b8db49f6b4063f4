"""The runtime's internal graph: ONNX nodes in topological order, tensors by name,
constants as numpy arrays.  Small on purpose: passes rewrite it, kernels read it."""

from __future__ import annotations

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
        """Reorders nodes so each follows the producers of its inputs; rejects cycles."""
        available = set(self.constants) | {v.name for v in self.inputs} | {""}
        pending, ordered = list(self.nodes), []
        while pending:
            ready = [n for n in pending if all(i in available for i in n.inputs)]
            if not ready:
                missing = sorted({i for n in pending for i in n.inputs if i not in available})
                raise InferenceError(
                    f"{self.source}: graph has a cycle or reads undefined tensors {missing[:5]}"
                )
            ids = {id(n) for n in ready}
            pending = [n for n in pending if id(n) not in ids]
            ordered.extend(ready)
            for n in ready:
                available.update(n.outputs)
        self.nodes = ordered
