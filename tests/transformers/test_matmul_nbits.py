"""The runtime's MatMulNBits (C kernel, 4/8-bit codes unpacked on the fly) against a float64
reference and ONNX Runtime on the same file, awkward shapes included."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import runtime
from export.weight_only import pack_codes, pack_zero_points
from quant.weight_only import GroupSpec, dequantize_codes, rtn
from runtime.errors import InferenceError


def _model(codes, scale, zero, bits, k, n, group, symmetric, b_bytes=None):
    packed = pack_codes(codes.numpy(), bits, n, group)
    inits = [numpy_helper.from_array(packed if b_bytes is None else b_bytes, "B"),
             numpy_helper.from_array(scale.numpy().reshape(-1), "S")]
    inputs = ["A", "B", "S"]
    if not symmetric:
        inits.append(numpy_helper.from_array(pack_zero_points(zero.numpy(), bits), "Z"))
        inputs.append("Z")
    node = helper.make_node("MatMulNBits", inputs, ["Y"], name="mm", domain="com.microsoft",
                            K=k, N=n, bits=bits, block_size=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return model.SerializeToString()


@pytest.mark.parametrize(
    "bits,symmetric,k,n,m,group",
    [(4, True, 64, 48, 5, 32), (4, False, 100, 17, 1, 16), (8, True, 96, 33, 7, 32), (8, False, 130, 16, 3, 64),
     (4, False, 384, 70, 9, 128)],
)
def test_matches_reference_and_onnxruntime(bits, symmetric, k, n, m, group):
    rng = np.random.default_rng(k + n)
    w = torch.tensor(rng.standard_normal((n, k)), dtype=torch.float32)
    codes, scale, zero = rtn(w, GroupSpec(bits, group, symmetric))
    ref_w = dequantize_codes(codes, scale, zero, k).numpy().astype(np.float64)
    a = rng.standard_normal((m, k)).astype(np.float32)
    ref = a.astype(np.float64) @ ref_w.T
    model = _model(codes, scale, zero, bits, k, n, group, symmetric)
    for threads in (1, 3):
        ours = runtime.InferenceSession(model, threads=threads).run(None, {"A": a})[0]
        assert ours.shape == (m, n) and np.abs(ours - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    ort = pytest.importorskip("onnxruntime")
    theirs = ort.InferenceSession(model).run(None, {"A": a})[0]
    assert np.abs(ours - theirs).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_wrong_weight_size_is_a_named_error():
    w = torch.randn(16, 64)
    codes, scale, zero = rtn(w, GroupSpec(4, 32, True))
    model = _model(codes, scale, zero, 4, 64, 16, 32, True, b_bytes=np.zeros((16, 2, 8), np.uint8))
    with pytest.raises(InferenceError, match="MatMulNBits"):
        runtime.InferenceSession(model)
