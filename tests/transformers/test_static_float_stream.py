"""The float residual stream's integer products (``float_adds=True`` exports): where our runtime
and ONNX Runtime must agree bit for bit, found by tracing MiniLM-L6 (issue 14/12).

The file's form for a Linear that feeds a float residual add is DQ(x codes) -> Gemm(DQ int8
weights per channel, DQ int32 bias) with no Q after it; our runtime folds it into an fp32-output
QGemm, float(acc + bias) * (s_x * s_w[c]), which is ONNX Runtime's arithmetic exactly."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import runtime

RNG = np.random.default_rng(14)


def _linear_into_float_add(m: int, k: int, n: int) -> tuple[bytes, dict[str, np.ndarray]]:
    sx = np.float32(0.047)
    sw = (RNG.random(n) * 0.01 + 0.002).astype(np.float32)
    w = RNG.integers(-127, 128, (n, k)).astype(np.int8)
    bias = RNG.integers(-20000, 20000, n).astype(np.int32)
    inits = [
        numpy_helper.from_array(np.array(sx), "sx"),
        numpy_helper.from_array(np.uint8(128), "zx"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(sw, "sw"),
        numpy_helper.from_array(np.zeros(n, np.int8), "zw"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array((sx * sw).astype(np.float32), "sb"),
        numpy_helper.from_array(np.zeros(n, np.int32), "zb"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bd"], axis=0),
        helper.make_node("Gemm", ["xd", "wd", "bd"], ["y"], transB=1),
        helper.make_node("Add", ["y", "r"], ["out"]),  # the float residual add
    ]
    graph = helper.make_graph(
        nodes,
        "float_stream",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [m, n]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [m, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    feeds = {
        "x": (RNG.standard_normal((m, k)) * 2).astype(np.float32),
        "r": (RNG.standard_normal((m, n)) * 5).astype(np.float32),
    }
    return model.SerializeToString(), feeds


@pytest.mark.parametrize(("m", "k", "n"), [(7, 384, 384), (96, 1536, 384)])
def test_fp32_output_qgemm_is_onnx_runtimes_arithmetic_bit_for_bit(m, k, n):
    ort = pytest.importorskip("onnxruntime")
    data, feeds = _linear_into_float_add(m, k, n)
    sess = runtime.InferenceSession(data, threads=1)
    assert [n.op_type for n in sess.graph.nodes].count("QGemm") == 1  # folded, not run in fp32
    ours = sess.run(None, feeds)[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    theirs = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_array_equal(ours, theirs)
