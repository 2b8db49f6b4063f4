"""The reference-vs-itself column of bench/onnx_files.py: onnx.reference with its float
Conv/Gemm/MatMul summed another conformant way must still compute the same sums (only the
float32 rounding may move), and the float64 form must be the more accurate one."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.onnx_files import PERTURBATIONS, output_step, perturbed_ops, reference_codes, self_check


def _run(node: onnx.NodeProto, feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray], perturb: str | None):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in feeds.items()],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for n, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    ops = perturbed_ops(perturb) if perturb else None
    return onnx.reference.ReferenceEvaluator(model, new_ops=ops).run(None, feeds)[0]


def _exact_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, group: int, pad: int, stride: int) -> np.ndarray:
    """Direct float64 convolution, written independently of onnx.reference's im2col."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, m, oh, ow))
    per = m // group
    for o in range(m):
        g = o // per
        for i in range(oh):
            for j in range(ow):
                win = x[:, g * cg : (g + 1) * cg, i * stride : i * stride + kh, j * stride : j * stride + kw]
                y[:, o, i, j] = (win * w[o].astype(np.float64)).sum(axis=(1, 2, 3)) + b[o]
    return y


@pytest.mark.parametrize("group", [1, 2, 6])
def test_perturbed_conv_computes_the_same_convolution_and_float64_is_the_more_accurate(group):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 7, 7), dtype=np.float32)
    w = rng.standard_normal((6, 6 // group, 3, 3), dtype=np.float32)
    b = rng.standard_normal(6, dtype=np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, pads=[1, 1, 1, 1], strides=[2, 2])
    exact = _exact_conv(x, w, b, group, pad=1, stride=2)
    default = _run(node, {"x": x}, {"w": w, "b": b}, None)
    errors = {}
    for kind in PERTURBATIONS:
        y = _run(node, {"x": x}, {"w": w, "b": b}, kind)
        assert y.dtype == np.float32 and y.shape == exact.shape
        # a wrong channel/weight pairing would be off by O(1), not by float32 rounding
        np.testing.assert_allclose(y, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
        errors[kind] = np.abs(y - exact).max()
    # float64 accumulation rounds once: the float32 value nearest the exact sum
    assert np.array_equal(_run(node, {"x": x}, {"w": w, "b": b}, "float64"), exact.astype(np.float32))
    assert errors["float64"] <= np.abs(default - exact).max()


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_perturbed_conv_follows_dilations_and_auto_pad_like_the_reference(auto_pad):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 9, 8), dtype=np.float32)
    w = rng.standard_normal((6, 2, 3, 2), dtype=np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=2, dilations=[2, 1], strides=[2, 1], auto_pad=auto_pad)
    default = _run(node, {"x": x}, {"w": w}, None)
    for kind in PERTURBATIONS:
        y = _run(node, {"x": x}, {"w": w}, kind)
        assert y.shape == default.shape
        np.testing.assert_allclose(y, default, rtol=0, atol=1e-5 * np.abs(default).max())


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_perturbed_gemm_keeps_the_product_for_every_transposition(trans_a, trans_b):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 3) if trans_a else (3, 40), dtype=np.float32)
    b = rng.standard_normal((5, 40) if trans_b else (40, 5), dtype=np.float32)
    c = rng.standard_normal(5, dtype=np.float32)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0)
    exact = 0.5 * (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64) + 2.0 * c
    for kind in PERTURBATIONS:
        y = _run(node, {"a": a}, {"b": b, "c": c}, kind)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, exact, rtol=0, atol=1e-5 * np.abs(exact).max())
    assert np.array_equal(_run(node, {"a": a}, {"b": b, "c": c}, "float64"), exact.astype(np.float32))


@pytest.mark.parametrize("b_shape", [(2, 32, 4), (32, 4), (32,)])
def test_perturbed_matmul_keeps_the_product_batched_and_for_vectors(b_shape):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 32), dtype=np.float32)
    b = rng.standard_normal(b_shape, dtype=np.float32)
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    for kind in PERTURBATIONS:
        y = _run(node, {"a": a}, {"b": b}, kind)
        assert y.dtype == np.float32 and y.shape == exact.shape
        np.testing.assert_allclose(y, exact, rtol=0, atol=1e-5 * np.abs(exact).max())


def test_an_unknown_perturbation_is_refused_by_name():
    with pytest.raises(ValueError, match="float16"):
        perturbed_ops("float16")


def _near_tie_gemm_file(path) -> np.ndarray:
    """A QDQ file, input -> Q -> DQ -> Gemm(B = DQ of per-K-row codes) -> Q -> DQ, whose one
    output is the sum 0.5 + 2^-25 + 2^-26 quantized with scale 1: exactly (float64, then one
    rounding to float32: 0.5 + 2^-24) it rounds to code 1, while a float32 order that adds the
    small terms to 0.5 one at a time loses both (0.5, a tie, code 0).  Returns the input."""
    u8, s8 = TensorProto.UINT8, TensorProto.INT8
    inits = [
        helper.make_tensor("sx", TensorProto.FLOAT, [], [2.0**-8]),
        helper.make_tensor("zx", u8, [], [0]),
        helper.make_tensor("bq", s8, [3, 1], [64, 32, 16]),  # B = [1, 2^-17, 2^-18] by K-row scales
        helper.make_tensor("sb", TensorProto.FLOAT, [3], [2.0**-6, 2.0**-22, 2.0**-22]),
        helper.make_tensor("zb", s8, [3], [0, 0, 0]),
        helper.make_tensor("sy", TensorProto.FLOAT, [], [1.0]),
        helper.make_tensor("zy", u8, [], [0]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bd"], axis=0),
        helper.make_node("Gemm", ["xd", "bd"], ["y"]),
        helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "near_tie",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return np.array([[0.5, 2.0**-8, 2.0**-8]], dtype=np.float32)  # codes 128, 1, 1


def test_self_check_reports_the_code_a_conformant_summation_order_moves(tmp_path):
    path = tmp_path / "near_tie.onnx"
    x = _near_tie_gemm_file(path)
    # the textbook float32 loop adds 2^-25 to 0.5 first: a tie, kept at 0.5, then 2^-26 is lost too
    textbook = reference_codes(path, x, "sequential")
    assert textbook["yq"].item() == 0
    # float64 rounds 0.5 + 3 * 2^-26 once, to 0.5 + 2^-24: above the tie; so does the exact stretch
    assert reference_codes(path, x, "float64")["yq"].item() == 1
    assert reference_codes(path, x, "exact")["yq"].item() == 1
    step = output_step(path)
    assert step == 1.0
    ours = np.array([[1.0]], dtype=np.float32)  # a runtime that rounds the exact sum
    check = self_check(path, x, step, "float64", textbook, ours)
    assert check.perturb == "float64" and check.quantized == 2
    assert (check.output.identical, check.output.max_steps) == (0.0, 1)
    assert (check.tensors, check.first, check.first_codes) == (1, "yq", 1)
    assert check.ours is not None and check.ours.identical == 1.0  # ours equals the exact sum
