"""Layout choice: the integer convolution kernels work in NHWC, so chains of quantized
ops run channels-last, with one Transpose where a chain starts and one where NCHW data is
needed again (fp32 ops, graph outputs).

A node runs NHWC when it is a 2-D QLinearConv, or a layout-agnostic quantized op
(MaxPool, QLinearAdd/Mul, QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool,
QLinearSigmoid/LeakyRelu) whose activation inputs are already NHWC.  Such nodes get
``channels_last=1``; tensor names keep meaning "this value", in whichever layout its
producer chose."""

from __future__ import annotations

from runtime.graph import MS_DOMAIN, Graph, Node

TO_NHWC, TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
FOLLOWERS = {
    ("", "MaxPool"): 1,
    (MS_DOMAIN, "QLinearGlobalAveragePool"): 1,
    (MS_DOMAIN, "QLinearAveragePool"): 1,
    (MS_DOMAIN, "QLinearSigmoid"): 1,
    (MS_DOMAIN, "QLinearLeakyRelu"): 1,
    (MS_DOMAIN, "QLinearAdd"): 2,
    (MS_DOMAIN, "QLinearMul"): 2,
}
"""op -> number of activation inputs (at positions 0 and 3 for the binary ops)."""


def _activation_slots(node: Node) -> list[int]:
    if node.key == (MS_DOMAIN, "QLinearConcat"):
        return list(range(2, len(node.inputs), 3))
    return [0, 3][: FOLLOWERS.get(node.key, 1)]


class _Layout:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nhwc: set[str] = set()
        self.converted: dict[tuple[str, bool], str] = {}
        self.nodes: list[Node] = []

    def as_layout(self, tensor: str, want_nhwc: bool) -> str:
        """Name of tensor in the wanted layout, adding a (cached) Transpose when needed."""
        if not tensor or tensor in self.graph.constants or (tensor in self.nhwc) == want_nhwc:
            return tensor
        key = (tensor, want_nhwc)
        if key not in self.converted:
            name = self.graph.fresh_name(f"{tensor}__{'nhwc' if want_nhwc else 'nchw'}")
            self.nodes.append(
                Node("Transpose", name, [tensor], [name], {"perm": TO_NHWC if want_nhwc else TO_NCHW})
            )
            if want_nhwc:
                self.nhwc.add(name)
            self.converted[key] = name
        return self.converted[key]

    def place(self, node: Node) -> None:
        slots = _activation_slots(node)
        is_conv = (
            node.key == ("", "QLinearConv")
            and self.graph.const(node.inputs[3]) is not None
            and self.graph.const(node.inputs[3]).ndim == 4
        )
        follows = (
            node.key in FOLLOWERS
            or (node.key == (MS_DOMAIN, "QLinearConcat") and node.attrs.get("axis") in (1, -3))
        ) and all(node.inputs[s] in self.nhwc for s in slots if s < len(node.inputs))
        if is_conv or follows:
            for s in slots:
                node.inputs[s] = self.as_layout(node.inputs[s], True)
            node.attrs["channels_last"] = 1
            self.nhwc.update(o for o in node.outputs[:1] if o)
        else:
            node.inputs = [self.as_layout(i, False) for i in node.inputs]
        self.nodes.append(node)

    def restore_outputs(self) -> None:
        """Graph outputs must be NCHW: the NHWC value is renamed and transposed back."""
        for out in self.graph.output_names() & self.nhwc:
            inner = self.graph.fresh_name(f"{out}__nhwc")
            for node in self.nodes:
                node.outputs = [inner if o == out else o for o in node.outputs]
                node.inputs = [inner if i == out else i for i in node.inputs]
            self.nodes.append(Node("Transpose", f"{out}__to_nchw", [inner], [out], {"perm": TO_NCHW}))


def choose_layout(graph: Graph) -> Graph:
    layout = _Layout(graph)
    for node in graph.nodes:
        layout.place(node)
    layout.restore_outputs()
    graph.nodes = layout.nodes
    graph.toposort()
    return graph
