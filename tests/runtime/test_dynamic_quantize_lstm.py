"""com.microsoft DynamicQuantizeLSTM: our kernel against ONNX Runtime's on hand-built nodes
(peepholes, coupled input/forget gate, directions, per-tensor and per-channel scales)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime

ort = pytest.importorskip("onnxruntime")

IN, HID, SEQ, BATCH = 5, 7, 6, 3


def _model(dirs: int, direction: str, per_channel: bool, peepholes: bool, input_forget: int, seed: int):
    rng = np.random.default_rng(seed)
    shape_s = (dirs, 4 * HID) if per_channel else (dirs,)
    inits = [
        numpy_helper.from_array(rng.integers(-127, 128, (dirs, IN, 4 * HID)).astype(np.int8), "W"),
        numpy_helper.from_array(rng.integers(-127, 128, (dirs, HID, 4 * HID)).astype(np.int8), "R"),
        numpy_helper.from_array(rng.normal(0, 0.3, (dirs, 8 * HID)).astype(np.float32), "B"),
        numpy_helper.from_array(rng.uniform(0.002, 0.01, shape_s).astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(shape_s, np.int8), "wz"),
        numpy_helper.from_array(rng.uniform(0.002, 0.01, shape_s).astype(np.float32), "rs"),
        numpy_helper.from_array(np.zeros(shape_s, np.int8), "rz"),
    ]
    if peepholes:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (dirs, 3 * HID)).astype(np.float32), "P"))
    node = helper.make_node("DynamicQuantizeLSTM", ["x", "W", "R", "B", "", "h0", "c0", "P" if peepholes else "",
                                                    "ws", "wz", "rs", "rz"], ["y", "yh", "yc"], domain="com.microsoft",
                            hidden_size=HID, direction=direction, input_forget=input_forget)
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [node], "dq_lstm",
        [helper.make_tensor_value_info("x", f, [SEQ, BATCH, IN]),
         helper.make_tensor_value_info("h0", f, [dirs, BATCH, HID]),
         helper.make_tensor_value_info("c0", f, [dirs, BATCH, HID])],
        [helper.make_tensor_value_info(n, f, None) for n in ("y", "yh", "yc")], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(("direction", "per_channel", "peepholes", "input_forget"), [
    ("forward", True, False, 0), ("reverse", False, True, 0), ("bidirectional", True, True, 0),
    ("bidirectional", False, False, 1)])
def test_matches_onnx_runtime(direction, per_channel, peepholes, input_forget):
    dirs = 2 if direction == "bidirectional" else 1
    model = _model(dirs, direction, per_channel, peepholes, input_forget, seed=len(direction) + peepholes)
    rng = np.random.default_rng(7)
    feeds = {"x": rng.normal(0, 2, (SEQ, BATCH, IN)).astype(np.float32),
             "h0": rng.normal(0, 0.5, (dirs, BATCH, HID)).astype(np.float32),
             "c0": rng.normal(0, 0.5, (dirs, BATCH, HID)).astype(np.float32)}
    ours = runtime.InferenceSession(model.SerializeToString(), threads=1).run(None, feeds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    theirs = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=3e-5)  # same integer products; ORT's σ/tanh are MLAS approximations


def test_sequence_lens_and_non_constant_weights_are_named_errors():
    model = _model(1, "forward", True, False, 0, seed=0)
    model.graph.node[0].input[4] = "lens"
    model.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [BATCH]))
    feeds = {"x": np.zeros((SEQ, BATCH, IN), np.float32), "h0": np.zeros((1, BATCH, HID), np.float32),
             "c0": np.zeros((1, BATCH, HID), np.float32), "lens": np.full(BATCH, SEQ, np.int32)}
    with pytest.raises(runtime.InferenceError, match="DynamicQuantizeLSTM.*sequence_lens"):
        runtime.InferenceSession(model.SerializeToString(), threads=1).run(None, feeds)
    model = _model(1, "forward", True, False, 0, seed=0)
    w = model.graph.initializer[0]
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.INT8, list(w.dims)))
    del model.graph.initializer[0]
    with pytest.raises(runtime.InferenceError, match="DynamicQuantizeLSTM.*W must be a constant"):
        runtime.InferenceSession(model.SerializeToString(), threads=1)
