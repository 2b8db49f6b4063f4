"""A QDQ weight may be quantized per axis along any axis the specification allows, not only the
output channels.  The integer fold requantizes with one multiplier per output channel, so it
must fold only per-tensor or per-output-channel weights and leave the others in float (found
by bench/onnx_files.py's hand-built near-tie Gemm: a per-K-row B made the fold fail, and a
Conv with per-input-channel scales of the same size as its output channels folded silently
wrong, 54 steps off)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import InferenceSession
from runtime.loader import load_graph
from runtime.passes import fold_qdq

U8, S8 = TensorProto.UINT8, TensorProto.INT8


def _qdq_model(op: str, w_shape: tuple[int, ...], axis: int, x_shape: tuple[int, ...], **attrs) -> onnx.ModelProto:
    """input -> Q -> DQ -> op(., DQ(w; per-axis scales along axis)) -> Q, opset 21."""
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, w_shape).astype(np.int8)
    n = w_shape[axis]
    inits = [
        helper.make_tensor("sx", TensorProto.FLOAT, [], [0.05]),
        helper.make_tensor("zx", U8, [], [128]),
        numpy_helper.from_array(w, "wq"),
        numpy_helper.from_array((0.01 * 2.0 ** np.arange(n)).astype(np.float32), "sw"),
        numpy_helper.from_array(np.zeros(n, np.int8), "zw"),
        helper.make_tensor("sy", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("zy", U8, [], [128]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=axis),
        helper.make_node(op, ["xd", "wd"], ["y"], **attrs),
        helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("out", U8, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


CASES = [
    # op, weight shape, scale axis, input shape, attributes, whether the axis is the output channels
    ("Conv", (4, 4, 1, 1), 1, (1, 4, 3, 3), {}, False),
    ("Conv", (4, 4, 1, 1), 0, (1, 4, 3, 3), {}, True),
    ("Conv", (4, 4, 1, 1), -4, (1, 4, 3, 3), {}, True),
    ("Gemm", (4, 4), 0, (2, 4), {}, False),
    ("Gemm", (4, 4), 1, (2, 4), {}, True),
    ("Gemm", (4, 4), 1, (2, 4), {"transB": 1}, False),
    ("Gemm", (4, 4), 0, (2, 4), {"transB": 1}, True),
    ("MatMul", (4, 4), 0, (2, 4), {}, False),
    ("MatMul", (4, 4), -1, (2, 4), {}, True),
]


@pytest.mark.parametrize(("op", "w_shape", "axis", "x_shape", "attrs", "per_output"), CASES)
def test_weight_scales_along_any_axis_give_the_reference_codes(op, w_shape, axis, x_shape, attrs, per_output):
    model = _qdq_model(op, w_shape, axis, x_shape, **attrs)
    x = (3 * np.random.default_rng(1).standard_normal(x_shape)).astype(np.float32)
    ref = onnx.reference.ReferenceEvaluator(model).run(None, {"input": x})[0]
    ours = InferenceSession(model.SerializeToString(), threads=1).run(None, {"input": x})[0]
    assert ours.shape == ref.shape
    # the integer fold and the reference's float arithmetic may round a near-tie differently
    assert np.abs(ours.astype(np.int64) - ref.astype(np.int64)).max() <= 1
    folded = fold_qdq(load_graph(model.SerializeToString()))
    assert any(node.op_type == op for node in folded.nodes) != per_output  # float only off the channel axis
