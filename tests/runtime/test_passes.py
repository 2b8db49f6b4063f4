"""Each graph pass on its own, on hand-built graphs."""

from __future__ import annotations

import numpy as np

from runtime.graph import MS_DOMAIN, Graph, Node, ValueInfo
from runtime.passes import choose_layout, constant_fold, fold_qdq, fuse_clamps, remove_dead_nodes


def graph(nodes, constants=None, inputs=("x",), outputs=("y",)) -> Graph:
    g = Graph(
        nodes,
        dict(constants or {}),
        [ValueInfo(i, [1, 3, 8, 8], "tensor(float)") for i in inputs],
        [ValueInfo(o, [], "tensor(float)") for o in outputs],
    )
    g.toposort()
    return g


def qdq_conv_graph(activation: Node | None = None, **extra: np.ndarray) -> Graph:
    consts = {
        "xs": np.float32(0.02),
        "xz": np.uint8(128),
        "w": np.ones((4, 3, 3, 3), np.int8),
        "ws": np.full(4, 0.01, np.float32),
        "wz": np.zeros(4, np.int8),
        "b": np.arange(4, dtype=np.int32),
        "bs": np.full(4, np.float32(0.02) * np.float32(0.01), np.float32),
        "bz": np.zeros(4, np.int32),
        "ys": np.float32(0.05),
        "yz": np.uint8(0),
        **extra,
    }
    conv_out = "c" if activation else "h"
    nodes = [
        Node("QuantizeLinear", "qx", ["x", "xs", "xz"], ["xq"]),
        Node("DequantizeLinear", "dqx", ["xq", "xs", "xz"], ["xf"]),
        Node("DequantizeLinear", "dqw", ["w", "ws", "wz"], ["wf"], {"axis": 0}),
        Node("DequantizeLinear", "dqb", ["b", "bs", "bz"], ["bf"], {"axis": 0}),
        Node("Conv", "conv", ["xf", "wf", "bf"], [conv_out], {"pads": [1, 1, 1, 1]}),
        Node("QuantizeLinear", "qy", ["h", "ys", "yz"], ["hq"]),
        Node("DequantizeLinear", "dqy", ["hq", "ys", "yz"], ["y"]),
    ]
    if activation:
        nodes.insert(5, activation)
    return graph(nodes, consts)


def test_fuse_clamps_moves_relu_and_clip_into_the_producer():
    g = fuse_clamps(qdq_conv_graph(Node("Relu", "relu", ["c"], ["h"])))
    conv = next(n for n in g.nodes if n.op_type == "Conv")
    assert conv.attrs["fused_min"] == 0.0 and conv.attrs["fused_max"] is None
    assert conv.outputs == ["h"] and not any(n.op_type == "Relu" for n in g.nodes)

    g = qdq_conv_graph(Node("Clip", "clip", ["c", "lo", "hi"], ["h"]), lo=np.float32(0), hi=np.float32(6))
    conv = next(n for n in fuse_clamps(g).nodes if n.op_type == "Conv")
    assert (conv.attrs["fused_min"], conv.attrs["fused_max"]) == (0.0, 6.0)


def test_fuse_clamps_leaves_a_clip_with_runtime_bounds():
    g = qdq_conv_graph(Node("Clip", "clip", ["c", "x", ""], ["h"]))
    assert any(n.op_type == "Clip" for n in fuse_clamps(g).nodes)


def test_fold_qdq_turns_dq_conv_q_into_qlinearconv_keeping_the_int32_bias():
    g = fold_qdq(qdq_conv_graph())
    conv = next(n for n in g.nodes if n.op_type == "QLinearConv")
    assert conv.inputs == ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    assert conv.outputs == ["hq"] and not any(n.op_type == "Conv" for n in g.nodes)
    assert not any(n.name == "qy" for n in g.nodes)


def test_fold_qdq_requantizes_a_float_bias_and_moves_data_ops_onto_int8():
    g = qdq_conv_graph(bf_float=np.array([0.1, -0.2, 0.3, 0.0], np.float32))
    g.nodes = [n for n in g.nodes if n.name != "dqb"]
    next(n for n in g.nodes if n.op_type == "Conv").inputs[2] = "bf_float"
    g.nodes.insert(-1, Node("MaxPool", "pool", ["hdq"], ["p"], {"kernel_shape": [2, 2]}))
    g.nodes.insert(-1, Node("QuantizeLinear", "qp", ["p", "ys", "yz"], ["pq"]))
    g.nodes[-1].inputs[0] = "pq"
    g.nodes.insert(-3, Node("DequantizeLinear", "dqh", ["hq", "ys", "yz"], ["hdq"]))
    g.toposort()
    g = fold_qdq(g)
    conv = next(n for n in g.nodes if n.op_type == "QLinearConv")
    np.testing.assert_array_equal(
        g.constants[conv.inputs[8]], np.rint(g.constants["bf_float"] / np.float32(2e-4))
    )
    pool = next(n for n in g.nodes if n.op_type == "MaxPool")
    assert pool.inputs == ["hq"] and pool.outputs == ["pq"]


def test_fold_qdq_leaves_unquantized_consumers_alone():
    g = qdq_conv_graph()
    g.nodes = [n for n in g.nodes if n.name not in ("qy", "dqy")]
    g.outputs = [ValueInfo("h", [], "tensor(float)")]
    assert any(n.op_type == "Conv" for n in fold_qdq(g).nodes)


def test_constant_fold_evaluates_constant_subgraphs_and_respects_skip():
    g = graph(
        [
            Node("Constant", "c", [], ["two"], {"value": np.array(2.0, np.float32)}),
            Node("Mul", "m", ["two", "three"], ["six"]),
            Node("DequantizeLinear", "dq", ["q", "s"], ["wf"]),
            Node("Add", "a", ["x", "six"], ["t"]),
            Node("Add", "a2", ["t", "wf"], ["y"]),
        ],
        {"three": np.float32(3), "q": np.array([4], np.uint8), "s": np.float32(0.5)},
    )
    g = constant_fold(g, skip={"DequantizeLinear"})
    assert float(g.constants["six"]) == 6.0
    assert [n.name for n in g.nodes] == ["dq", "a", "a2"]
    g = constant_fold(g)
    assert [n.name for n in g.nodes] == ["a", "a2"] and g.constants["wf"].tolist() == [2.0]


def test_remove_dead_nodes_drops_unreachable_nodes_and_constants():
    g = graph(
        [
            Node("Relu", "used", ["x"], ["y"]),
            Node("Relu", "dead", ["x"], ["z"]),
            Node("Add", "dead2", ["z", "k"], ["zz"]),
        ],
        {"k": np.float32(1)},
    )
    g = remove_dead_nodes(g)
    assert [n.name for n in g.nodes] == ["used"] and "k" not in g.constants


def test_choose_layout_runs_quantized_chains_channels_last():
    consts = {
        "s": np.float32(0.1),
        "z": np.uint8(0),
        "w": np.ones((4, 4, 1, 1), np.int8),
        "ws": np.float32(0.1),
        "wz": np.int8(0),
    }
    conv = lambda name, src, dst: Node("QLinearConv", name, [src, "s", "z", "w", "ws", "wz", "s", "z"], [dst])
    g = graph(
        [
            conv("c1", "x", "a"),
            conv("c2", "a", "b"),
            Node("QLinearAdd", "add", ["a", "s", "z", "b", "s", "z", "s", "z"], ["c"], domain=MS_DOMAIN),
            Node("Relu", "float_op", ["c"], ["y"]),
        ],
        consts,
    )
    g = choose_layout(g)
    ops = [(n.op_type, n.attrs.get("channels_last")) for n in g.nodes]
    assert ops == [
        ("Transpose", None),
        ("QLinearConv", 1),
        ("QLinearConv", 1),
        ("QLinearAdd", 1),
        ("Transpose", None),
        ("Relu", None),
    ]
    assert g.nodes[0].attrs["perm"] == [0, 2, 3, 1] and g.nodes[4].attrs["perm"] == [0, 3, 1, 2]


def test_choose_layout_transposes_graph_outputs_back_to_nchw():
    consts = {
        "s": np.float32(0.1),
        "z": np.uint8(0),
        "w": np.ones((4, 4, 1, 1), np.int8),
        "ws": np.float32(0.1),
        "wz": np.int8(0),
    }
    g = graph([Node("QLinearConv", "c1", ["x", "s", "z", "w", "ws", "wz", "s", "z"], ["y"])], consts)
    g = choose_layout(g)
    assert g.nodes[-1].op_type == "Transpose" and g.nodes[-1].outputs == ["y"]
    assert g.nodes[-1].attrs["perm"] == [0, 3, 1, 2]


def test_every_fold_target_is_a_registered_op_and_keeps_ops_fold_onto_codes():
    """The ops' own facts drive the fold: each QdqFold names an op the runtime runs, and an op
    declared grid='keeps' (Slice here, never listed in fold_qdq.py) moves onto the int8 codes."""
    from runtime.ops import registry

    for op in registry.specs():
        if op.fold is not None:
            assert registry.spec(op.fold.target) is not None, (op.op_type, op.fold.target)
    consts = {"s": np.float32(0.1), "z": np.uint8(3), "st": np.array([1]), "en": np.array([5])}
    g = graph(
        [
            Node("QuantizeLinear", "q0", ["x", "s", "z"], ["xq"]),
            Node("DequantizeLinear", "dq0", ["xq", "s", "z"], ["xf"]),
            Node("Slice", "slice", ["xf", "st", "en"], ["sf"]),
            Node("QuantizeLinear", "q1", ["sf", "s", "z"], ["sq"]),
            Node("DequantizeLinear", "dq1", ["sq", "s", "z"], ["y"]),
        ],
        consts,
    )
    sliced = next(n for n in fold_qdq(g).nodes if n.op_type == "Slice")
    assert sliced.inputs[0] == "xq" and sliced.outputs == ["sq"]
    assert not any(n.name == "q1" for n in g.nodes)


def test_fold_qdq_turns_a_product_of_two_runtime_tensors_into_exact_qlinearmatmul():
    """Attention's QKᵀ and PV: both operands computed at run time. Folded, the product is the exact
    integer sum requantized once (what ONNX Runtime's QLinearMatMul and the simulation compute), not
    an fp32 sum of dequantized products that rounds differently near half a step."""
    from runtime import InferenceSession
    from tests.runtime.onnx_builders import const, make_model, tensor

    sa, sb, sy = np.float32(0.037), np.float32(0.021), np.float32(0.29)
    nodes = [
        *(onnx_node(op, [f"{t}{s}", f"s{t}", f"z{t}"], [f"{t}{o}"])
          for t in "ab" for op, s, o in (("QuantizeLinear", "", "q"), ("DequantizeLinear", "q", "f"))),
        onnx_node("MatMul", ["af", "bf"], ["m"]),
        onnx_node("QuantizeLinear", ["m", "sy", "zy"], ["y"]),
    ]
    consts = [const("sa", sa), const("za", np.uint8(131)), const("sb", sb), const("zb", np.int8(3)),
              const("sy", sy), const("zy", np.uint8(120))]
    model = make_model(nodes, [tensor("a", [2, 3, 5, 40]), tensor("b", [2, 3, 40, 7])],
                       [tensor("y", [2, 3, 5, 7], 2)], consts)
    sess = InferenceSession(model, threads=1)
    assert [n.op_type for n in sess.graph.nodes].count("QLinearMatMul") == 1
    rng = np.random.default_rng(0)
    a = rng.normal(0, 2, (2, 3, 5, 40)).astype(np.float32)
    b = rng.normal(0, 1, (2, 3, 40, 7)).astype(np.float32)
    y = sess.run(None, {"a": a, "b": b})[0]
    aq = np.clip(np.rint(a / sa) + 131, 0, 255).astype(np.int64) - 131
    bq = np.clip(np.rint(b / sb) + 3, -128, 127).astype(np.int64) - 3
    multiplier = np.float32(np.float32(sa * sb) / sy)
    expected = np.clip(np.rint((aq @ bq).astype(np.float64) * np.float64(multiplier)) + 120, 0, 255)
    np.testing.assert_array_equal(y, expected.astype(np.uint8))


def onnx_node(op: str, inputs: list[str], outputs: list[str]):
    import onnx

    return onnx.helper.make_node(op, inputs, outputs)
