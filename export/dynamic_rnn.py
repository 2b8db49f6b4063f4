"""Export of dynamic int8 LSTM, GRU and RNN layers (quant.dynamic_rnn), rewritten from the float export.

The float twin's nn.LSTM / nn.GRU / nn.RNN is exported by torch.onnx as ONNX LSTM / GRU / RNN nodes,
one per layer, W (dirs, 4H|3H, in) in ONNX's gate order; each node whose W[d] equals a quantized
module's dequantized weights (content match, gates reordered) is replaced:

- **LSTM → com.microsoft DynamicQuantizeLSTM**, the node ONNX Runtime's own quantizer writes:
  W (dirs, in, 4H) and R (dirs, H, 4H) int8 (transposed, ORT's layout), B as exported,
  W_scale / R_scale (dirs, 4H) fp32 per channel and int8 zero points 0 (ORT requires 0 for
  signed weights).  ORT quantizes X over the whole sequence and h_{t-1} per step, per tensor,
  which is what the simulation does.
- **GRU and RNN → unrolled standard ops**, since ORT has no quantized GRU or RNN: the input product of all steps
  as one DynamicQuantizeLinear + MatMulInteger (+ Cast, Mul(s_x·s_W)), then per step
  DynamicQuantizeLinear(h) → MatMulInteger(R) → Cast → Mul and the gate arithmetic in the
  simulation's order, σ and tanh as Cast(double) → Sigmoid/Tanh → Cast(float) (the value every
  engine rounds alike).  Unrolled rather than a Loop/Scan body because the bundled runtime has
  no subgraph ops and ORT runs a flat graph without per-iteration session overhead; the price is
  a fixed sequence length (the exported one: the time axis is Split into ones, which fails on
  any other length instead of computing a wrong answer) and a graph of 22 nodes per GRU step
  (10 per RNN step: ``act((x_t + rh) + (Wb + Rb))``, Relu as is).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from export.builder import MS_DOMAIN
from export.errors import OnnxExportError
from export.weight_only import weight_key
from quant.dynamic_rnn import _DynamicRecurrent, to_onnx_gates


def float_rnn_twin(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[str, _DynamicRecurrent, int, int]]]:
    """``model`` with each dynamic LSTM/GRU replaced by its float twin (in place on a copy made
    by the caller), and the content keys of every layer/direction's ONNX-ordered W."""
    found: dict[str, tuple[str, _DynamicRecurrent, int, int]] = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, _DynamicRecurrent):
            continue
        for layer in range(module.num_layers):
            for d in range(module.dirs):
                key = weight_key(to_onnx_gates(module.dequantized(layer, d)[0], module.kind).numpy())
                if key in found:
                    raise OnnxExportError(f"'{found[key][0]}' and '{name}' hold identical {module.kind} weights; "
                                          "the exporter cannot tell their nodes apart")
                found[key] = (name, module, layer, d)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, module.float_twin())
    return model, found


def _init(graph: onnx.GraphProto, array: np.ndarray, name: str) -> str:
    graph.initializer.append(numpy_helper.from_array(array, name))
    return name


def _weights(module: _DynamicRecurrent, layer: int, d: int) -> tuple[np.ndarray, ...]:
    """ONNX-ordered (int8 W (in, G·H), W scale, int8 R (H, G·H), R scale, Wb, Rb)."""
    qi, si, qh, sh, b_ih, b_hh = module._params(layer, d)
    g = module.kind
    return (to_onnx_gates(qi, g).numpy().T.copy(), to_onnx_gates(si, g).numpy().astype(np.float32),
            to_onnx_gates(qh, g).numpy().T.copy(), to_onnx_gates(sh, g).numpy().astype(np.float32),
            to_onnx_gates(b_ih, g).numpy().astype(np.float32), to_onnx_gates(b_hh, g).numpy().astype(np.float32))


def _lstm_node(node: onnx.NodeProto, p: str, mods: list, graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    parts = [_weights(m, layer, d) for m, layer, d in mods]
    w = _init(graph, np.stack([q[0] for q in parts]), p + "W_quant")
    r = _init(graph, np.stack([q[2] for q in parts]), p + "R_quant")
    ws = _init(graph, np.stack([q[1] for q in parts]), p + "W_scale")
    rs = _init(graph, np.stack([q[3] for q in parts]), p + "R_scale")
    wz = _init(graph, np.zeros((len(parts), parts[0][1].size), np.int8), p + "W_zero_point")
    rz = _init(graph, np.zeros((len(parts), parts[0][3].size), np.int8), p + "R_zero_point")
    ins = list(node.input) + [""] * (8 - len(node.input))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"}
    return [helper.make_node("DynamicQuantizeLSTM", [ins[0], w, r, ins[3], ins[4], ins[5], ins[6], ins[7],
                                                     ws, wz, rs, rz], list(node.output), name=p + "DynamicQuantizeLSTM",
                             domain=MS_DOMAIN, **attrs)]


class _Nodes:
    """Node list with unique output names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.nodes, self.count = prefix, [], 0

    def __call__(self, op: str, inputs: list[str], outputs: int = 1, **attrs) -> list[str]:
        self.count += 1
        outs = [f"{self.prefix}{op}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{self.prefix}{op}_{self.count}", **attrs))
        return outs

    def one(self, op: str, inputs: list[str], **attrs) -> str:
        return self(op, inputs, 1, **attrs)[0]


def _unrolled_nodes(node: onnx.NodeProto, p: str, mods: list, graph: onnx.GraphProto,
                    seq: int) -> list[onnx.NodeProto]:
    """A GRU or RNN node as unrolled standard ops (module docstring); ``p`` prefixes every name."""
    kind = node.op_type
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations") or []]
    torch_form = attrs.get("layout", 0) == 0 and attrs.get("clip") is None and (
        (kind == "GRU" and attrs.get("linear_before_reset", 0) == 1 and not acts)
        or (kind == "RNN" and len(set(acts)) <= 1 and set(acts) <= {"Tanh", "Relu"}))
    if not torch_form:
        raise OnnxExportError(f"{kind} node {node.name!r}: only torch's form (GRU: linear_before_reset=1; RNN: Tanh or "
                              "Relu; layout 0, no clip) is unrolled")
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    hidden = int(attrs["hidden_size"])
    ins = list(node.input) + [""] * (6 - len(node.input))
    if ins[4]:
        raise OnnxExportError(f"{kind} node {node.name!r} carries sequence_lens; the unrolled form runs full sequences")
    n = _Nodes(p)
    c = {
        "one": _init(graph, np.asarray(1.0, np.float32), p + "one"),
        "split_t": _init(graph, np.ones(seq, np.int64), p + "split_time"),
        "ax0": _init(graph, np.asarray([0], np.int64), p + "axis0"),
        "ax1": _init(graph, np.asarray([1], np.int64), p + "axis1"),
    }
    if kind == "GRU":
        c["split_zr_n"] = _init(graph, np.asarray([2 * hidden, hidden], np.int64), p + "split_zr_n")
        c["split_z_r"] = _init(graph, np.asarray([hidden, hidden], np.int64), p + "split_z_r")

    def act(op: str, v: str) -> str:
        if op == "Relu":  # exact in any precision
            return n.one("Relu", [v])
        return n.one("Cast", [n.one(op, [n.one("Cast", [v], to=TensorProto.DOUBLE)])], to=TensorProto.FLOAT)

    xq, xs, xz = n("DynamicQuantizeLinear", [ins[0]], 3)
    ys, finals = [], []
    for k, (m, layer, d) in enumerate(mods):
        qw, sw, qr, sr, wb, rb = _weights(m, layer, d)
        q = f"{p}d{d}/"
        w_i, sw_i = _init(graph, qw, q + "W_quant"), _init(graph, sw, q + "W_scale")
        r_i, sr_i = _init(graph, qr, q + "R_quant"), _init(graph, sr, q + "R_scale")
        acc = n.one("Cast", [n.one("MatMulInteger", [xq, w_i, xz])], to=TensorProto.FLOAT)
        xw = n.one("Mul", [acc, n.one("Mul", [xs, sw_i])])
        if kind == "GRU":
            b_zr = _init(graph, (wb[: 2 * hidden] + rb[: 2 * hidden]).astype(np.float32), q + "bias_zr")  # Wb + Rb
            b_wn, b_rn = _init(graph, wb[2 * hidden:], q + "bias_Wn"), _init(graph, rb[2 * hidden:], q + "bias_Rn")
            gx_zr, gx_n = n("Split", [xw, c["split_zr_n"]], 2, axis=-1)
            gx_n = n.one("Add", [gx_n, b_wn])  # x_n + b_in: the same sum for every step, formed once
            steps = [n("Split", [g, c["split_t"]], seq, axis=0) for g in (gx_zr, gx_n)]
        else:
            b = _init(graph, (wb + rb).astype(np.float32), q + "bias")  # Wb + Rb
            steps = [n("Split", [xw, c["split_t"]], seq, axis=0)]
        if ins[5]:
            h = n.one("Slice", [ins[5], _init(graph, np.asarray([k], np.int64), q + "h0_start"),
                                _init(graph, np.asarray([k + 1], np.int64), q + "h0_end"), c["ax0"]])
        else:
            batch = n.one("Shape", [ins[0]], start=1, end=2)
            dims = n.one("Concat", [_init(graph, np.asarray([1], np.int64), q + "dim1"), batch,
                                    _init(graph, np.asarray([hidden], np.int64), q + "dimh")], axis=0)
            h = n.one("ConstantOfShape", [dims], value=numpy_helper.from_array(np.zeros(1, np.float32)))
        reverse = direction == "reverse" or d == 1
        outs: list[str] = [""] * seq
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            hq, hs, hz = n("DynamicQuantizeLinear", [h], 3)
            racc = n.one("Cast", [n.one("MatMulInteger", [hq, r_i, hz])], to=TensorProto.FLOAT)
            rh = n.one("Mul", [racc, n.one("Mul", [hs, sr_i])])
            if kind == "RNN":
                h = act(acts[0] if acts else "Tanh", n.one("Add", [n.one("Add", [steps[0][t], rh]), b]))
            else:
                gh_zr, gh_n = n("Split", [rh, c["split_zr_n"]], 2, axis=-1)
                # z and r side by side (ONNX's z, r order): one Add, bias Add and sigmoid for both
                zr = act("Sigmoid", n.one("Add", [n.one("Add", [steps[0][t], gh_zr]), b_zr]))
                z, r = n("Split", [zr, c["split_z_r"]], 2, axis=-1)
                hn = act("Tanh", n.one("Add", [steps[1][t], n.one("Mul", [r, n.one("Add", [gh_n, b_rn])])]))
                h = n.one("Add", [n.one("Mul", [n.one("Sub", [c["one"], z]), hn]), n.one("Mul", [z, h])])
            outs[t] = h
        ys.append(n.one("Unsqueeze", [n.one("Concat", outs, axis=0), c["ax1"]]))
        finals.append(h)
    if node.output[0]:
        n.nodes.append(helper.make_node("Concat", ys, [node.output[0]], name=p + "Y", axis=1))
    if len(node.output) > 1 and node.output[1]:
        n.nodes.append(helper.make_node("Concat", finals, [node.output[1]], name=p + "Y_h", axis=0))
    return n.nodes


def _sequence_length(inferred: onnx.ModelProto, x: str, where: str) -> int:
    """The static length of time axis 0 of ``x`` in the (shape-inferred) float export."""
    for v in list(inferred.graph.value_info) + list(inferred.graph.input):
        if v.name == x:
            dim = v.type.tensor_type.shape.dim[0]
            if dim.HasField("dim_value"):
                return int(dim.dim_value)
    raise OnnxExportError(f"{where}: the unrolled dynamic int8 GRU/RNN needs a static sequence length; the exported "
                          "graph's time axis is dynamic (leave it out of dynamic_axes)")


def rewrite_recurrent(model: onnx.ModelProto, found: dict[str, tuple[str, _DynamicRecurrent, int, int]]) -> set[str]:
    """Replaces every LSTM / GRU node carrying a quantized module's weights; returns the names of
    the modules rewritten.  A node holding some but not all directions of a module is an error."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    # before any rewrite (plain ONNX ops only); data propagation resolves Shape -> Reshape chains
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    done: set[str] = set()
    calls: dict[tuple[str, int], int] = {}
    alias = {nd.output[0]: nd.input[0] for nd in graph.node if nd.op_type == "Identity"}
    for node in [nd for nd in graph.node if nd.op_type in ("LSTM", "GRU", "RNN") and nd.domain in ("", "ai.onnx")]:
        w_name = node.input[1]
        while w_name in alias:  # torch.onnx shares a weight used twice through Identity nodes
            w_name = alias[w_name]
        if w_name not in inits:
            continue
        w = numpy_helper.to_array(inits[w_name])
        hits = [found.get(weight_key(w[d])) for d in range(w.shape[0])]
        if not any(hits):
            continue
        where = f"{node.op_type} node {node.name!r}"
        if not all(hits) or len({(h[0], h[2]) for h in hits}) != 1 or [h[3] for h in hits] != list(range(len(hits))):
            raise OnnxExportError(f"{where}: its directions do not match one quantized layer's weights")
        name, module = hits[0][0], hits[0][1]
        if module.kind != node.op_type:
            raise OnnxExportError(f"{where} carries the weights of {module.kind} '{name}'")
        mods = [(h[1], h[2], h[3]) for h in hits]
        calls[(name, hits[0][2])] = k = calls.get((name, hits[0][2]), 0) + 1  # a module called more than once
        prefix = f"{name}/l{hits[0][2]}/" + (f"call{k}/" if k > 1 else "")
        if node.op_type == "LSTM":
            new = _lstm_node(node, prefix, mods, graph)
        else:
            new = _unrolled_nodes(node, prefix, mods, graph, _sequence_length(inferred, node.input[0], where))
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, nd in enumerate(new):
            graph.node.insert(index + offset, nd)
        done.add(name)
    return done

