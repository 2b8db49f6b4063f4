"""A small ONNX graph under construction: unique names, initializers, nodes.

Export writes nodes through this class rather than through torch.onnx so that every
initializer (int8 weight codes, int32 bias codes, scales, zero points) and every
QuantizeLinear/DequantizeLinear lands exactly where the numeric contract puts it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


class GraphBuilder:
    """Accumulates nodes and initializers; ``model()`` assembles the ModelProto."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._counter = itertools.count()

    def fresh(self, hint: str) -> str:
        """A tensor/node name not used before, readable: derived from ``hint``."""
        base = re.sub(r"[^A-Za-z0-9_.:/-]", "_", hint) or "t"
        name = base
        while name in self._used:
            name = f"{base}_{next(self._counter)}"
        self._used.add(name)
        return name

    def initializer(self, array: np.ndarray, hint: str) -> str:
        """Add a constant tensor; returns its name."""
        name = self.fresh(hint)
        self.initializers[name] = numpy_helper.from_array(np.array(array, order="C", copy=True), name)
        return name

    def scalar(self, value: float | int, dtype: type = np.float32, hint: str = "const") -> str:
        return self.initializer(np.array(value, dtype=dtype), hint)

    def int64s(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.initializer(np.asarray(list(values), dtype=np.int64), hint)

    def node(
        self, op: str, inputs: Sequence[str], hint: str, *, n_out: int = 1, domain: str = "", **attrs
    ) -> str | list[str]:
        """Append one node; returns its output name (or names when ``n_out`` > 1)."""
        node_name = self.fresh(f"{hint}/{op}")
        outs = [self.fresh(f"{hint}" if n_out == 1 else f"{hint}:{i}") for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=node_name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        self._used.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def add_output(self, name: str, elem_type: int, shape: Sequence[int | str] | None) -> None:
        self.outputs.append(
            helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))
        )

    def model(self, graph_name: str, producer: str = "compress") -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, graph_name, self.inputs, self.outputs, initializer=list(self.initializers.values())
        )
        opsets = [helper.make_opsetid("", self.opset)]
        if any(n.domain == MS_DOMAIN for n in self.nodes):
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name=producer)
        # The oldest IR version that carries these opsets: readable by the widest range of runtimes.
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model
