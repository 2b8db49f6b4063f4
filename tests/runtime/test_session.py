"""InferenceSession end to end on small models: API, errors, fp32 ops and ORT-quantized
QDQ / QOperator models compared with onnxruntime on the same file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_builders import const, make_model, ort_session, quantize_ort, tensor

from runtime import InferenceSession, UnsupportedOpError
from runtime.errors import InferenceError


def test_unsupported_ops_are_all_listed_at_load():
    model = make_model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="ok"),
            helper.make_node("NonMaxSuppression", ["a"], ["b"], name="nms"),
            helper.make_node("Unique", ["b"], ["y"], name="hard"),
        ],
        [tensor("x", [1, 4])],
        [tensor("y", [1, 4])],
    )
    with pytest.raises(UnsupportedOpError) as err:
        InferenceSession(model)
    assert "'nms' (NonMaxSuppression)" in str(err.value) and "'hard' (Unique)" in str(err.value)
    assert "'ok'" not in str(err.value)


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], vals=b"\0" * 16, raw=True)
    weights.data_location = TensorProto.EXTERNAL
    weights.ClearField("raw_data")
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        weights.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g", [tensor("x", [4])], [tensor("y", [4])], [weights]
    )
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 16)
    onnx.save(helper.make_model(graph, ir_version=8), str(folder / "m.onnx"))
    with pytest.raises(InferenceError, match="outside the model folder"):
        InferenceSession(folder / "m.onnx")


def test_api_mirrors_onnxruntime_and_validates_inputs():
    model = make_model(
        [helper.make_node("Relu", ["x"], ["y"])], [tensor("x", ["n", 4])], [tensor("y", ["n", 4])]
    )
    sess = InferenceSession(model, threads=1)
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("x", ["n", 4], "tensor(float)") and out.name == "y"
    x = np.array([[-1, 2, -3, 4]], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.maximum(x, 0))
    np.testing.assert_array_equal(sess.run(["y"], {"x": x})[0], np.maximum(x, 0))
    with pytest.raises(InferenceError, match="must be tensor\\(float\\)"):
        sess.run(None, {"x": x.astype(np.float64)})
    with pytest.raises(InferenceError, match="has shape"):
        sess.run(None, {"x": np.zeros((1, 5), np.float32)})
    with pytest.raises(InferenceError, match="missing input"):
        sess.run(None, {})
    with pytest.raises(InferenceError, match="not outputs"):
        sess.run(["nope"], {"x": x})


def test_fp32_ops_match_onnxruntime():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["p"], ["ap"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["ap"], ["g"]),
        helper.make_node("Shape", ["g"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero1"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["g", "newshape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1),
        helper.make_node("LayerNormalization", ["logits", "ln_s", "ln_b"], ["ln"], axis=-1),
        helper.make_node("Gelu", ["ln"], ["gl"], domain=""),
        helper.make_node("Softmax", ["gl"], ["y"], axis=-1),
        helper.make_node("ReduceMean", ["y", "axes"], ["m"], keepdims=1),
        helper.make_node("Sub", ["y", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("Sqrt", ["sq"], ["z"]),
    ]
    inits = [
        const("w", w),
        const("zero", np.array(0, np.int64)),
        const("zero1", np.array([0], np.int64)),
        const("minus1", np.array([-1], np.int64)),
        const("fw", rng.standard_normal((5, 8)).astype(np.float32)),
        const("fb", rng.standard_normal(5).astype(np.float32)),
        const("ln_s", np.ones(5, np.float32)),
        const("ln_b", np.zeros(5, np.float32)),
        const("axes", np.array([1], np.int64)),
        const("two", np.float32(2)),
    ]
    model = make_model(
        nodes,
        [tensor("x", ["n", 3, 17, 17])],
        [tensor("z", ["n", 5]), tensor("y", ["n", 5])],
        inits,
        opset=20,
    )
    x = rng.standard_normal((2, 3, 17, 17)).astype(np.float32)
    ours, ref = InferenceSession(model, threads=1).run(None, {"x": x}), ort_session(model).run(None, {"x": x})
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["qdq", "qop"])
@pytest.mark.parametrize("per_channel,reduce_range", [(True, False), (False, False), (True, True)])
def test_ort_quantized_small_cnn_matches_onnxruntime(small_cnn_fp32, tmp_path, fmt, per_channel, reduce_range):
    """Our runtime equals ONNX's reference arithmetic (QDQ files), and ORT where ORT is exact: on a
    VNNI/AMX CPU, or with ORT's own 7-bit ``reduce_range`` weights on any CPU (issue 11)."""
    from onnx.reference import ReferenceEvaluator

    from tests.ort_agreement import ort_is_exact

    path = quantize_ort(small_cnn_fp32, tmp_path / f"q_{fmt}.onnx", (1, 3, 32, 32), fmt, per_channel,
                        reduce_range=reduce_range)
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32), dtype=np.float32)
    sess = InferenceSession(path, threads=2)
    assert {n.op_type for n in sess.graph.nodes} >= {"QLinearConv"}
    model = onnx.load(str(path))
    last_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "output")
    scale = float(
        next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == last_dq.input[1])
    )
    ours = sess.run(None, {"input": x})[0]
    if fmt == "qdq":  # the reference knows no com.microsoft QLinearAdd; it carries DequantizeLinear ≥ 19
        spec = ReferenceEvaluator(onnx.version_converter.convert_version(model, 21)).run(None, {"input": x})[0]
        steps = np.rint(np.abs(ours - spec) / scale)
        assert steps.max() <= 1 and (steps == 0).mean() >= 0.999, "runtime vs ONNX reference"
    ort = ort_session(path).run(None, {"input": x})[0]
    steps = np.rint(np.abs(ours - ort) / scale)
    if ort_is_exact() or reduce_range:
        assert steps.max() <= 1 and (steps == 0).mean() >= 0.999, "runtime vs ONNX Runtime"


def test_runtime_never_imports_torch(small_cnn_fp32):
    code = (
        "import sys, numpy as np, runtime; "
        f"s = runtime.InferenceSession({str(small_cnn_fp32)!r}); "
        "s.run(None, {'input': np.zeros((1, 3, 32, 32), np.float32)}); "
        "assert 'torch' not in sys.modules, 'runtime imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fp32_model_matches_onnxruntime(small_cnn_fp32):
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32), dtype=np.float32)
    ours = InferenceSession(small_cnn_fp32).run(None, {"input": x})[0]
    np.testing.assert_allclose(
        ours, ort_session(small_cnn_fp32).run(None, {"input": x})[0], rtol=1e-4, atol=1e-4
    )


def test_channels_last_copies_equal_numpy_ones():
    from runtime.ops.qlinear_conv import contiguous_nhwc

    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (2, 3, 5, 7), dtype=np.uint8)
    for view in (nchw.transpose(0, 2, 3, 1), nchw[:, :, 1:, ::2].transpose(0, 2, 3, 1), nchw[..., 1:]):
        got = contiguous_nhwc(view)
        assert got.flags.c_contiguous and got.dtype == view.dtype
        np.testing.assert_array_equal(got, view)
