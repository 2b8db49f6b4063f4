"""Each clean-up pass alone, on hand-built graphs, checked against ONNX Runtime where it computes."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from export.cleanup import cancel_redundant_qdq, clean, fold_constants, remove_dead_nodes


def _model(nodes, inits, out="y", opset=17):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what opset 17 needs; the installed onnx writes newer than ORT reads
    return model


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]


QP = {"s": np.array(0.05, np.float32), "z": np.array(128, np.uint8)}


def test_remove_dead_nodes_drops_unused_nodes_and_initializers():
    m = _model(
        [
            helper.make_node("Relu", ["x"], ["y"], name="live"),
            helper.make_node("Add", ["x", "w"], ["dead"], name="dead"),
        ],
        {"w": np.ones((2, 3), np.float32)},
    )
    remove_dead_nodes(m)
    assert [n.name for n in m.graph.node] == ["live"]
    assert not m.graph.initializer


def test_redundant_dq_q_pair_cancels_and_results_are_unchanged():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["d1"], name="d1"),
        helper.make_node("QuantizeLinear", ["d1", "s2", "z2"], ["q2"], name="q2"),  # same values, other names
        helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"], name="d2"),
    ]
    m = _model(nodes, {**QP, "s2": QP["s"].copy(), "z2": QP["z"].copy()})
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    before = _run(m, x)
    cancel_redundant_qdq(m)
    assert [n.name for n in m.graph.node] == ["q1", "d2"]
    assert m.graph.node[1].input[0] == "q1"
    np.testing.assert_array_equal(_run(m, x), before)


def test_dq_q_pair_with_different_scale_is_kept():
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["d1"], name="d1"),
        helper.make_node("QuantizeLinear", ["d1", "s2", "z"], ["q2"], name="q2"),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"], name="d2"),
    ]
    m = _model(nodes, {**QP, "s2": np.array(0.1, np.float32)})
    cancel_redundant_qdq(m)
    assert len(m.graph.node) == 4


def test_fold_constants_evaluates_constant_subgraphs_but_never_dequantize():
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["ab"], name="fold_me"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="keep_dq"),
        helper.make_node("Add", ["x", "ab"], ["t"], name="add"),
        helper.make_node("Add", ["t", "w"], ["y"], name="add_w"),
    ]
    inits = {
        "a": np.full((2, 3), 2.0, np.float32),
        "b": np.full((2, 3), 3.0, np.float32),
        "wq": np.ones((2, 3), np.int8),
        "ws": np.array(0.5, np.float32),
        "wz": np.array(0, np.int8),
    }
    m = _model(nodes, inits)
    x = np.zeros((2, 3), np.float32)
    before = _run(m, x)
    fold_constants(m)
    assert [n.name for n in m.graph.node] == ["keep_dq", "add", "add_w"]
    assert {t.name for t in m.graph.initializer} == {"ab", "wq", "ws", "wz"}
    np.testing.assert_array_equal(_run(m, x), before)
    onnx.checker.check_model(m, full_check=True)


def test_clean_runs_all_passes():
    nodes = [
        helper.make_node("Neg", ["c"], ["nc"], name="fold"),
        helper.make_node("Add", ["x", "nc"], ["y"], name="add"),
        helper.make_node("Relu", ["x"], ["unused"], name="dead"),
    ]
    m = clean(_model(nodes, {"c": np.ones((2, 3), np.float32)}))
    assert [n.name for n in m.graph.node] == ["add"]
