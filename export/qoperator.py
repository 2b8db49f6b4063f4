"""QDQ → QOperator: rewrite DQ → op → Q patterns into integer operators.

The QDQ graph already says everything: which tensors are int8, with which scale and
zero point. Each rule below recognises one pattern and replaces it with the operator
ONNX Runtime's QOperator format uses for it:

=======================================  =============================================
DQ(x), DQ(w), DQ(b) → Conv [→ act] → Q    QLinearConv
DQ(x), DQ(w), DQ(b) → Gemm [→ act] → Q    com.microsoft QGemm
DQ(x), DQ(w) → MatMul → Add(DQ(b)) → Q    MatMulInteger + int32 bias → Cast → Mul(s_x·s_w) → Q
DQ(a), DQ(b) → MatMul → Q                 QLinearMatMul
DQ(a), DQ(b) → Add → Q                    com.microsoft QLinearAdd
DQ(x_i) → Concat → Q                      com.microsoft QLinearConcat
DQ(x) → GlobalAveragePool / AveragePool   com.microsoft QLinearGlobalAveragePool / QLinearAveragePool
DQ(x) → MaxPool/Reshape/... → Q (same)    the op itself on the int8 codes
=======================================  =============================================

A fused activation whose bound the output quantizer already imposes (ReLU with the
zero point at the bottom of the range, ReLU6 whose 6.0 lies above the top) vanishes;
otherwise it runs as DQ → act → Q after the integer op, which is exact because
quantization is monotone. Every other float op stays DQ → op → Q. Dead DQ nodes are
left for ``cleanup.remove_dead_nodes``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.builder import MS_DOMAIN
from export.cleanup import consumers, initializer_map, producers
from quant.policy import ONNX_EXACT

ACTIVATIONS = ("Relu", "Clip")


class _Rewriter:
    """Pattern matching state over one graph; rules append to ``new_nodes``."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.g = model.graph
        self.inits = initializer_map(self.g)
        self.made = producers(self.g)
        self.users = consumers(self.g)
        self.outputs = {o.name for o in self.g.output}
        self.removed: set[str] = set()
        self.new_nodes: list[onnx.NodeProto] = []
        self._names: set[str] = {n.name for n in self.g.node} | set(self.made) | set(self.inits)

    # --- matching helpers -----------------------------------------------------------------
    def dq(self, name: str, *, const: bool | None = None) -> onnx.NodeProto | None:
        """The DequantizeLinear producing ``name`` (of a constant or an activation, if asked)."""
        n = self.made.get(name)
        if n is None or n.op_type != "DequantizeLinear" or n.name in self.removed:
            return None
        if const is not None and (n.input[0] in self.inits) != const:
            return None
        return n

    def sole_user(self, name: str) -> onnx.NodeProto | None:
        users = self.users.get(name, [])
        if len(users) != 1 or name in self.outputs or users[0].name in self.removed:
            return None
        return users[0]

    def tail(self, out: str) -> tuple[onnx.NodeProto | None, onnx.NodeProto | None]:
        """(activation or None, Q) consuming ``out`` alone, or (None, None)."""
        nxt = self.sole_user(out)
        act = None
        if nxt is not None and nxt.op_type in ACTIVATIONS:
            act, nxt = nxt, self.sole_user(nxt.output[0])
        if nxt is None or nxt.op_type != "QuantizeLinear" or not _per_tensor(nxt, self.inits):
            return None, None
        return act, nxt

    def fresh(self, hint: str) -> str:
        name, k = hint, 0
        while name in self._names:
            k += 1
            name = f"{hint}_{k}"
        self._names.add(name)
        return name

    def emit(self, op: str, inputs: list[str], output: str, hint: str, domain: str = "", **attrs) -> str:
        self.new_nodes.append(
            helper.make_node(op, inputs, [output], name=self.fresh(f"{hint}/{op}"), domain=domain, **attrs)
        )
        return output

    def int_output(self, act: onnx.NodeProto | None, q: onnx.NodeProto, hint: str) -> str:
        """Where the integer op writes: ``q``'s output, unless ``act`` must still run after it."""
        return q.output[0] if act is None or self.act_implied(act, q) else self.fresh(f"{hint}_int")

    def finish(self, y_int: str, act: onnx.NodeProto | None, q: onnx.NodeProto, hint: str) -> None:
        """Re-apply ``act`` as DQ → act → Q when the integer op did not write ``q``'s output."""
        if y_int == q.output[0]:
            return
        dq_out = self.emit(
            "DequantizeLinear", [y_int, q.input[1], q.input[2]], self.fresh(f"{hint}_dq"), hint
        )
        a = self.emit(
            act.op_type, [dq_out, *act.input[1:]], self.fresh(f"{hint}_{act.op_type.lower()}"), hint
        )
        self.emit("QuantizeLinear", [a, q.input[1], q.input[2]], q.output[0], f"{hint}_requant")

    def act_implied(self, act: onnx.NodeProto, q: onnx.NodeProto) -> bool:
        """True when saturating to ``q``'s range already applies ``act``."""
        scale = float(numpy_helper.to_array(self.inits[q.input[1]]))
        zp_t = numpy_helper.to_array(self.inits[q.input[2]])
        info = np.iinfo(zp_t.dtype)
        zp = int(zp_t)
        lo = (
            float(numpy_helper.to_array(self.inits[act.input[1]]))
            if len(act.input) > 1 and act.input[1]
            else None
        )
        hi = (
            float(numpy_helper.to_array(self.inits[act.input[2]]))
            if len(act.input) > 2 and act.input[2]
            else None
        )
        if act.op_type == "Relu":
            lo, hi = 0.0, None
        low_ok = lo is None or (lo == 0.0 and zp == info.min)
        high_ok = hi is None or np.round(np.float32(hi) / np.float32(scale)) + zp >= info.max
        return low_ok and high_ok

    def remove(self, *nodes: onnx.NodeProto | None) -> None:
        self.removed.update(n.name for n in nodes if n is not None)

    # --- rules --------------------------------------------------------------------------------
    def conv(self, n: onnx.NodeProto) -> bool:
        x, w = self.dq(n.input[0], const=False), self.dq(n.input[1], const=True)
        b = self.dq(n.input[2], const=True) if len(n.input) > 2 else None
        act, q = self.tail(n.output[0])
        if x is None or w is None or q is None or (len(n.input) > 2 and b is None):
            return False
        inputs = [*x.input, *w.input, q.input[1], q.input[2]] + ([b.input[0]] if b else [])
        y = self.emit("QLinearConv", inputs, self.int_output(act, q, n.name), n.name, **_attrs(n))
        self.finish(y, act, q, n.name)
        self.remove(n, act, q)
        return True

    def gemm(self, n: onnx.NodeProto) -> bool:
        attrs = _attrs(n)
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return False
        x, w = self.dq(n.input[0], const=False), self.dq(n.input[1], const=True)
        b = self.dq(n.input[2], const=True) if len(n.input) > 2 else None
        act, q = self.tail(n.output[0])
        if x is None or w is None or q is None or (len(n.input) > 2 and b is None):
            return False
        inputs = [*x.input, *w.input, b.input[0] if b else "", q.input[1], q.input[2]]
        y = self.emit(
            "QGemm",
            inputs,
            self.int_output(act, q, n.name),
            n.name,
            domain=MS_DOMAIN,
            transB=attrs.get("transB", 0),
        )
        self.finish(y, act, q, n.name)
        self.remove(n, act, q)
        return True

    def matmul(self, n: onnx.NodeProto) -> bool:
        a, w = self.dq(n.input[0], const=False), self.dq(n.input[1])
        if a is None or w is None:
            return False
        add = self.sole_user(n.output[0])
        bias = None
        if add is not None and add.op_type == "Add":
            other = add.input[1] if add.input[0] == n.output[0] else add.input[0]
            bias = self.dq(other, const=True)
        if bias is not None:
            return self._matmul_integer(n, a, w, add, bias)
        act, q = self.tail(n.output[0])
        if q is None:
            return False
        inputs = [*a.input, *w.input, q.input[1], q.input[2]]
        y = self.emit("QLinearMatMul", inputs, self.int_output(act, q, n.name), n.name)
        self.finish(y, act, q, n.name)
        self.remove(n, act, q)
        return True

    def _matmul_integer(
        self,
        n: onnx.NodeProto,
        a: onnx.NodeProto,
        w: onnx.NodeProto,
        add: onnx.NodeProto,
        bias: onnx.NodeProto,
    ) -> bool:
        """Linear on N-d input: the int32 accumulator plus the int32 bias, rescaled by s_x·s_w."""
        act, q = self.tail(add.output[0])
        if q is None or not _zero(self.inits, w.input[2]):
            return False
        h = n.name
        acc = self.emit(
            "MatMulInteger", [a.input[0], w.input[0], a.input[2], w.input[2]], self.fresh(f"{h}_acc"), h
        )
        acc = self.emit("Add", [acc, bias.input[0]], self.fresh(f"{h}_acc_bias"), h)
        acc_f = self.emit("Cast", [acc], self.fresh(f"{h}_acc_f"), h, to=onnx.TensorProto.FLOAT)
        y = self.emit("Mul", [acc_f, bias.input[1]], self.fresh(f"{h}_float"), h)  # bias scale = s_x·s_w[c]
        q_out = self.emit("QuantizeLinear", [y, q.input[1], q.input[2]], self.int_output(act, q, h), h)
        self.finish(q_out, act, q, h)
        self.remove(n, add, act, q)
        return True

    def add(self, n: onnx.NodeProto) -> bool:
        a, b = self.dq(n.input[0], const=False), self.dq(n.input[1], const=False)
        _, q = self.tail(n.output[0])
        if a is None or b is None or q is None or self.sole_user(n.output[0]) is not q:
            return False
        self.emit(
            "QLinearAdd", [*a.input, *b.input, q.input[1], q.input[2]], q.output[0], n.name, domain=MS_DOMAIN
        )
        self.remove(n, q)
        return True

    def concat(self, n: onnx.NodeProto) -> bool:
        xs = [self.dq(i, const=False) for i in n.input]
        q = self.sole_user(n.output[0])
        if any(x is None for x in xs) or q is None or q.op_type != "QuantizeLinear":
            return False
        inputs = [q.input[1], q.input[2]] + [i for x in xs for i in x.input]  # type: ignore[union-attr]
        self.emit("QLinearConcat", inputs, q.output[0], n.name, domain=MS_DOMAIN, axis=_attrs(n)["axis"])
        self.remove(n, q)
        return True

    def pool(self, n: onnx.NodeProto) -> bool:
        x = self.dq(n.input[0], const=False)
        q = self.sole_user(n.output[0])
        if x is None or q is None or q.op_type != "QuantizeLinear":
            return False
        op = "QLinearGlobalAveragePool" if n.op_type == "GlobalAveragePool" else "QLinearAveragePool"
        self.emit(
            op,
            [*x.input, q.input[1], q.input[2]],
            q.output[0],
            n.name,
            domain=MS_DOMAIN,
            channels_last=0,
            **_attrs(n),
        )
        self.remove(n, q)
        return True

    def exact(self, n: onnx.NodeProto) -> bool:
        x = self.dq(n.input[0], const=False)
        q = self.sole_user(n.output[0])
        if x is None or q is None or q.op_type != "QuantizeLinear" or not _same(self.inits, x, q):
            return False
        self.emit(n.op_type, [x.input[0], *n.input[1:]], q.output[0], n.name, **_attrs(n))
        self.remove(n, q)
        return True


def _attrs(n: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


def _per_tensor(n: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    return all(i in inits and len(inits[i].dims) == 0 for i in n.input[1:3])


def _zero(inits: dict[str, onnx.TensorProto], name: str) -> bool:
    return name in inits and not numpy_helper.to_array(inits[name]).any()


def _same(inits: dict[str, onnx.TensorProto], a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    """Identical per-tensor scale and zero point (names or values)."""
    if not (_per_tensor(a, inits) and _per_tensor(b, inits)):
        return False
    return all(
        x == y
        or (
            inits[x].data_type == inits[y].data_type
            and np.array_equal(numpy_helper.to_array(inits[x]), numpy_helper.to_array(inits[y]))
        )
        for x, y in zip(a.input[1:3], b.input[1:3], strict=True)
    )


RULES: dict[str, Callable[[_Rewriter, onnx.NodeProto], bool]] = {
    "Conv": _Rewriter.conv,
    "Gemm": _Rewriter.gemm,
    "MatMul": _Rewriter.matmul,
    "Add": _Rewriter.add,
    "Concat": _Rewriter.concat,
    "GlobalAveragePool": _Rewriter.pool,
    "AveragePool": _Rewriter.pool,
    **{op: _Rewriter.exact for op in ONNX_EXACT},
}


def to_qoperator(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a QDQ model into QOperator form (in place); unmatched ops stay DQ → op → Q."""
    rw = _Rewriter(model)
    out: list[onnx.NodeProto] = []
    for n in list(rw.g.node):
        if n.name in rw.removed:
            continue
        rule = RULES.get(n.op_type) if n.domain in ("", "ai.onnx") else None
        if rule is not None and rule(rw, n):
            out.extend(rw.new_nodes)
        else:
            out.append(n)
        rw.new_nodes.clear()
    del rw.g.node[:]
    rw.g.node.extend(out)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import) and any(n.domain == MS_DOMAIN for n in out):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model
