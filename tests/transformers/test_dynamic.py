"""Dynamic int8: the simulation is ONNX's DynamicQuantizeLinear + MatMulInteger, and the
exported file runs to the same numbers in ONNX Runtime and in the bundled runtime."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import compress
import runtime
from quant.dynamic import DynamicLinear, dynamic_qparams


def _onnx_dynamic_reference(x: np.ndarray, qw: np.ndarray, ws: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX's definitions in numpy, independently of the torch code."""
    lo, hi = np.float32(min(0.0, x.min())), np.float32(max(0.0, x.max()))
    s = np.float32((hi - lo) / np.float32(255))
    z = np.float32(np.clip(np.rint(-lo / s), 0, 255))
    q = np.clip(np.rint(x / s) + z, 0, 255)
    acc = (q.astype(np.int64) - int(z)) @ qw.astype(np.int64).T
    return (acc.astype(np.float32) * (s * ws).astype(np.float32) + b).astype(np.float32)


def test_module_is_the_onnx_arithmetic():
    torch.manual_seed(0)
    lin = nn.Linear(40, 24)
    m = DynamicLinear(lin.weight, lin.bias)
    x = torch.randn(6, 40) * 3 + 1
    ref = _onnx_dynamic_reference(x.numpy(), m.qweight.numpy(), m.weight_scale.numpy(), lin.bias.detach().numpy())
    assert np.array_equal(m(x).detach().numpy(), ref)
    assert int(m.qweight.abs().max()) == 127  # symmetric narrow per channel


def test_zero_input_gets_a_finite_scale():
    scale, zero = dynamic_qparams(torch.zeros(3, 4))
    assert float(scale) == 1.0 and float(zero) == 0.0


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(48, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_export_runs_identically_in_both_runtimes(tmp_path):
    torch.manual_seed(0)
    model = MLP().eval()
    q = compress.quantize_dynamic(model)
    assert isinstance(model.fc1, nn.Linear) and isinstance(q.fc1, DynamicLinear)
    x = torch.randn(7, 48)
    path = compress.export_dynamic(q, tmp_path / "dyn.onnx", (x,))
    with torch.no_grad():
        sim = q(x).numpy()
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0]
    # identical integer accumulators; only fp32 rounding of the float tail may differ
    np.testing.assert_allclose(ours, sim, rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    theirs = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(theirs, sim, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        assert float(torch.nn.functional.cosine_similarity(torch.tensor(sim), model(x)).min()) > 0.99


def _graph(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_dynamic_quantize_linear_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = _graph([helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 33])],
                   [helper.make_tensor_value_info(n, t, None) for n, t in
                    (("q", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8))])
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal((5, 33)) * 4 - 1, np.abs(rng.standard_normal((2, 33))), -np.ones((1, 33))):
        x = x.astype(np.float32)
        ours = runtime.InferenceSession(model).run(None, {"x": x})
        theirs = ort.InferenceSession(model).run(None, {"x": x})
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def _matmul_integer_model(w, zp_shape):
    return _graph(
        [helper.make_node("MatMulInteger", ["a", "w", "az"], ["y"])],
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, w.shape[0]]),
         helper.make_tensor_value_info("az", TensorProto.UINT8, zp_shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [helper.make_tensor(name="w", data_type=TensorProto.INT8, dims=w.shape, vals=w.reshape(-1).tolist())],
    )


def test_matmul_integer_with_run_time_zero_point():
    """A constant int8 B on the C GEMM; a_zero_point comes from the graph at run time."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (37, 19)).astype(np.int8)
    a = rng.integers(0, 256, (5, 37)).astype(np.uint8)
    session = runtime.InferenceSession(_matmul_integer_model(w, []))
    for az in (0, 3, 200):
        y = session.run(None, {"a": a, "az": np.array(az, np.uint8)})[0]
        assert np.array_equal(y, (a.astype(np.int64) - az) @ w.astype(np.int64))
    per_row = rng.integers(0, 256, 5).astype(np.uint8)  # ONNX allows one zero point per row of A
    y = runtime.InferenceSession(_matmul_integer_model(w, [None])).run(None, {"a": a, "az": per_row})[0]
    assert np.array_equal(y, (a.astype(np.int64) - per_row[:, None].astype(np.int64)) @ w.astype(np.int64))


def _per_token_reference(x: np.ndarray, qw: np.ndarray, ws: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear's formulas applied to each row (last axis) separately, in numpy."""
    lo = np.minimum(x.min(-1, keepdims=True), 0).astype(np.float32)
    hi = np.maximum(x.max(-1, keepdims=True), 0).astype(np.float32)
    s = ((hi - lo) / np.float32(255)).astype(np.float32)
    s = np.where(s > 0, s, np.float32(1)).astype(np.float32)
    z = np.clip(np.rint(-lo / s), 0, 255).astype(np.float32)
    q = np.clip(np.rint(x / s) + z, 0, 255)
    acc = (q.astype(np.int64) - z.astype(np.int64)) @ qw.astype(np.int64).T
    return (acc.astype(np.float32) * (s * ws).astype(np.float32) + b).astype(np.float32)


def test_per_token_module_is_per_row_dynamic_quantization():
    torch.manual_seed(2)
    lin = nn.Linear(40, 24)
    m = DynamicLinear(lin.weight, lin.bias, granularity="per_token")
    x = torch.randn(3, 6, 40) * torch.linspace(0.1, 20, 6)[:, None]  # rows of very different ranges
    x[1, 2] = 0.0  # a zero row gets scale 1
    ref = _per_token_reference(x.numpy(), m.qweight.numpy(), m.weight_scale.numpy(), lin.bias.detach().numpy())
    assert np.array_equal(m(x).detach().numpy(), ref)
    with torch.no_grad():  # on the small rows, per-row grids beat one grid sized for the largest
        tensor_err = (DynamicLinear(lin.weight, lin.bias)(x) - lin(x))[:, 0].abs().mean()
        row_err = (m(x) - lin(x))[:, 0].abs().mean()
    assert float(row_err) < 0.5 * float(tensor_err)
    with pytest.raises(compress.QuantizationError, match="granularity"):
        compress.quantize_dynamic(MLP(), granularity="per_channel")


@pytest.mark.parametrize("opset", [17, 18])
def test_per_token_export_runs_identically_in_both_runtimes(tmp_path, opset):
    torch.manual_seed(3)
    model = MLP().eval()
    q = compress.quantize_dynamic(model, granularity="per_token")
    x = torch.randn(2, 5, 48) * torch.linspace(0.2, 8, 5)[:, None]
    x[0, 1] = 0.0
    path = compress.export_dynamic(q, tmp_path / "dyn_token.onnx", (x,), opset=opset,
                                   dynamic_axes={"input": {0: "b", 1: "t"}})
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"ReduceMin", "ReduceMax", "MatMulInteger"} <= ops and "DynamicQuantizeLinear" not in ops
    with torch.no_grad():
        sim = q(x).numpy()
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(ours, sim, rtol=1e-6, atol=1e-6)
    ort = pytest.importorskip("onnxruntime")
    theirs = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(theirs, sim, rtol=1e-5, atol=1e-5)
