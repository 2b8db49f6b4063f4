"""Integer fold: DequantizeLinear -> op -> QuantizeLinear becomes one integer op.

Which ops fold, and into what, is each op's own fact (``OpSpec.fold`` and ``OpSpec.grid`` in
runtime/ops/registry.py); this module holds only the rewrite mechanisms, one per rule:

  conv         Conv -> QLinearConv (int32 bias requantized when its scale differs)
  gemm         Gemm -> com.microsoft QGemm (without a Q after it: fp32 output)
  matmul       MatMul with a constant 2-D B or a per-tensor run-time B -> QLinearMatMul
  elementwise  n quantized inputs, one output -> a com.microsoft QLinear* op (Add, Mul,
               average pools, Sigmoid, LeakyRelu)
  concat       Concat -> com.microsoft QLinearConcat
  grid "keeps" with equal input and output quantization -> the same op on the quantized
               tensor (exact: MaxPool, Reshape, Transpose, ...)

These are the forms ONNX Runtime's QOperator format uses, so QDQ and QOperator models run
through the same kernels.  Anything that does not match stays as DQ -> fp32 op -> Q, which
is correct by definition, only slower."""

from __future__ import annotations

import numpy as np

from runtime.graph import Graph, Node
from runtime.ops.registry import QdqFold, spec


class _Folder:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()
        self.outputs = graph.output_names()

    # -- matching helpers ------------------------------------------------------------
    def dq(self, tensor: str, per_tensor: bool = True) -> Node | None:
        """The DequantizeLinear producing tensor, when its scale and zero point are constant."""
        node = self.producers.get(tensor)
        if node is None or node.key != ("", "DequantizeLinear"):
            return None
        scale = self.graph.const(node.inputs[1])
        zp_name = node.inputs[2] if len(node.inputs) > 2 else ""
        if scale is None or (zp_name and self.graph.const(zp_name) is None):
            return None
        if per_tensor and scale.size != 1:
            return None
        return node

    def weight_dq(self, tensor: str, channel_axis: int) -> Node | None:
        """The DequantizeLinear of a weight whose scales are per tensor or per ``channel_axis``
        (the output channels, one requantization multiplier each).  The specification also
        allows per-axis scales along the summed axis, or per block; those cannot become one
        multiplier per output, so the op stays in float between DQ and Q (the reference's
        arithmetic) instead of folding with the scales applied to the wrong axis."""
        node = self.dq(tensor, per_tensor=False)
        if node is None or self.graph.const(node.inputs[1]).size == 1:
            return node
        weight = self.graph.const(node.inputs[0])
        axis = int(node.attrs.get("axis", 1))
        if weight is not None and axis < 0:
            axis += weight.ndim
        return node if axis == channel_axis and not node.attrs.get("block_size", 0) else None

    def zero_point(self, node: Node) -> str:
        """Name of a Q/DQ node's zero point, materialising the uint8 0 default."""
        if len(node.inputs) > 2 and node.inputs[2]:
            return node.inputs[2]
        name = self.graph.fresh_name(f"{node.name}_zero_point")
        self.graph.constants[name] = np.zeros((), np.uint8)
        return name

    def q_after(self, tensor: str) -> Node | None:
        """The only reader of tensor when it is a per-tensor QuantizeLinear."""
        if tensor in self.outputs:
            return None
        readers = self.consumers.get(tensor, [])
        if len(readers) != 1 or readers[0].key != ("", "QuantizeLinear"):
            return None
        q = readers[0]
        scale = self.graph.const(q.inputs[1])
        zp_name = q.inputs[2] if len(q.inputs) > 2 else ""
        if scale is None or scale.size != 1 or (zp_name and self.graph.const(zp_name) is None):
            return None
        return q

    def qparams(self, node: Node) -> list[str]:
        return [node.inputs[1], self.zero_point(node)]

    def same_qparams(self, a: Node, b: Node) -> bool:
        c = self.graph.const
        za = c(a.inputs[2]) if len(a.inputs) > 2 and a.inputs[2] else np.zeros((), np.uint8)
        zb = c(b.inputs[2]) if len(b.inputs) > 2 and b.inputs[2] else np.zeros((), np.uint8)
        return (
            float(c(a.inputs[1]).reshape(())) == float(c(b.inputs[1]).reshape(()))
            and za.dtype == zb.dtype
            and int(za.reshape(())) == int(zb.reshape(()))
        )

    def int_bias(self, name: str, x_dq: Node, w_dq: Node, where: str) -> str:
        """An int32 bias with scale s_x*s_w[c]: the DQ'd int32 itself when its scale already
        matches, otherwise the fp32 bias requantized (round half to even, saturated)."""
        g = self.graph
        b_dq = self.dq(name, per_tensor=False)
        expected = (
            np.float32(g.const(x_dq.inputs[1]).reshape(())) * g.const(w_dq.inputs[1]).astype(np.float32).reshape(-1)
        ).astype(np.float32)
        if b_dq is not None and g.const(b_dq.inputs[0]) is not None and g.const(b_dq.inputs[0]).dtype == np.int32:
            bq, bs = g.const(b_dq.inputs[0]), g.const(b_dq.inputs[1]).astype(np.float32).reshape(-1)
            bz = g.const(b_dq.inputs[2]) if len(b_dq.inputs) > 2 and b_dq.inputs[2] else np.zeros((), np.int32)
            if np.allclose(bs, expected, rtol=1e-6, atol=0) and not np.any(bz):
                return b_dq.inputs[0]
            value = ((bq.astype(np.int64) - bz.astype(np.int64)) * bs).astype(np.float32)
        else:
            value = g.const(name) if b_dq is None else None
            if value is None:
                return ""
        q = np.clip(np.rint(value.astype(np.float64) / expected.astype(np.float64)), -(2**31), 2**31 - 1)
        new = g.fresh_name(f"{where}_bias_int32")
        g.constants[new] = q.astype(np.int32)
        return new

    # -- rewrites --------------------------------------------------------------------
    def fold(self, node: Node) -> Node | None:
        """The integer node replacing ``node``, as the op's own facts say, or None."""
        op = spec(node)
        if op is None:
            return None
        if op.grid == "keeps":
            return self.fold_movement(node)
        if op.fold is None:
            return None
        return getattr(self, f"fold_{op.fold.rule}")(node, op.fold)

    def _fused(self, node: Node, attrs: dict) -> dict:
        return {**attrs, **{k: node.attrs[k] for k in ("fused_min", "fused_max") if k in node.attrs}}

    def fold_conv(self, node: Node, rule: QdqFold) -> Node | None:
        x_dq, w_dq, q = (
            self.dq(node.inputs[0]),
            self.weight_dq(node.inputs[1], 0),
            self.q_after(node.outputs[0]),
        )
        if not (x_dq and w_dq and q) or self.graph.const(w_dq.inputs[0]) is None:
            return None
        bias = ""
        if len(node.inputs) > 2 and node.inputs[2]:
            bias = self.int_bias(node.inputs[2], x_dq, w_dq, node.name)
            if not bias:
                return None
        inputs = [x_dq.inputs[0], *self.qparams(x_dq), w_dq.inputs[0], *self.qparams(w_dq), *self.qparams(q)]
        return Node(
            rule.target[1],
            node.name,
            inputs + ([bias] if bias else []),
            [q.outputs[0]],
            self._fused(node, dict(node.attrs)),
            rule.target[0],
        )

    def fold_gemm(self, node: Node, rule: QdqFold) -> Node | None:
        n_axis = 0 if node.attrs.get("transB", 0) else 1
        a_dq, b_dq = self.dq(node.inputs[0]), self.weight_dq(node.inputs[1], n_axis)
        if not (a_dq and b_dq) or self.graph.const(b_dq.inputs[0]) is None:
            return None
        if float(node.attrs.get("beta", 1.0)) != 1.0 and len(node.inputs) > 2 and node.inputs[2]:
            return None
        bias = ""
        if len(node.inputs) > 2 and node.inputs[2]:
            c = self.graph.const(node.inputs[2])
            dq_c = self.dq(node.inputs[2], per_tensor=False)
            if (c is not None and c.ndim > 1) or (c is None and dq_c is None):
                return None
            bias = self.int_bias(node.inputs[2], a_dq, b_dq, node.name)
            if not bias:
                return None
        q = self.q_after(node.outputs[0])
        inputs = [a_dq.inputs[0], *self.qparams(a_dq), b_dq.inputs[0], *self.qparams(b_dq), bias]
        attrs = {k: node.attrs[k] for k in ("transA", "transB", "alpha") if k in node.attrs}
        if q is None:
            if "fused_min" in node.attrs or "fused_max" in node.attrs:
                return None
            return Node(rule.target[1], node.name, inputs, [node.outputs[0]], attrs, rule.target[0])
        return Node(
            rule.target[1],
            node.name,
            inputs + self.qparams(q),
            [q.outputs[0]],
            self._fused(node, attrs),
            rule.target[0],
        )

    def fold_matmul(self, node: Node, rule: QdqFold) -> Node | None:
        a_dq, b_dq, q = (
            self.dq(node.inputs[0]),
            self.weight_dq(node.inputs[1], 1),  # B is 2-D when constant (below)
            self.q_after(node.outputs[0]),
        )
        if not (a_dq and b_dq and q):
            return None
        b = self.graph.const(b_dq.inputs[0])
        if b is None:  # both operands computed at run time (attention's QKᵀ, PV): per-tensor B only
            if self.graph.const(b_dq.inputs[1]).size != 1:
                return None
        elif b.ndim != 2:
            return None
        inputs = [a_dq.inputs[0], *self.qparams(a_dq), b_dq.inputs[0], *self.qparams(b_dq), *self.qparams(q)]
        return Node(rule.target[1], node.name, inputs, [q.outputs[0]], self._fused(node, {}), rule.target[0])

    def fold_elementwise(self, node: Node, rule: QdqFold) -> Node | None:
        q = self.q_after(node.outputs[0])
        dqs = [self.dq(i) for i in node.inputs[: rule.activations]]
        if q is None or not all(dqs):
            return None
        extra = [i for i in node.inputs[len(dqs) :] if i]
        if extra:
            return None
        inputs = [t for d in dqs for t in (d.inputs[0], *self.qparams(d))] + self.qparams(q)
        attrs = self._fused(node, {k: v for k, v in node.attrs.items() if k not in ("fused_min", "fused_max")})
        return Node(rule.target[1], node.name, inputs, [q.outputs[0]], attrs, rule.target[0])

    def fold_concat(self, node: Node, rule: QdqFold) -> Node | None:
        q = self.q_after(node.outputs[0])
        dqs = [self.dq(i) for i in node.inputs]
        if q is None or not all(dqs):
            return None
        inputs = self.qparams(q) + [t for d in dqs for t in (d.inputs[0], *self.qparams(d))]
        return Node(rule.target[1], node.name, inputs, [q.outputs[0]], dict(node.attrs), rule.target[0])

    def fold_movement(self, node: Node) -> Node | None:
        x_dq, q = self.dq(node.inputs[0]), self.q_after(node.outputs[0])
        if not (x_dq and q) or not self.same_qparams(x_dq, q) or len([o for o in node.outputs if o]) != 1:
            return None
        return Node(node.op_type, node.name, [x_dq.inputs[0], *node.inputs[1:]], [q.outputs[0]], dict(node.attrs))


def fold_qdq(graph: Graph) -> Graph:
    folder = _Folder(graph)
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for node in graph.nodes:
        new = folder.fold(node)
        if new is None:
            continue
        replaced[id(node)] = new
        q = folder.consumers.get(node.outputs[0], [None])[0]
        if q is not None and q.key == ("", "QuantizeLinear") and new.outputs[0] == q.outputs[0]:
            dropped.add(id(q))
    graph.nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in dropped]
    graph.toposort()
    return graph
