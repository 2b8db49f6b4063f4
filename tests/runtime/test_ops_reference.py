"""Ops on settings the ONNX node cases do not cover, or cover only through an excluded case,
checked against ONNX's reference evaluator (the specification's own arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator
from onnx_builders import const, make_model, ort_session, tensor

from runtime import InferenceError, InferenceSession
from runtime.ops import registry


def _both(model: bytes, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ours = InferenceSession(model, threads=1).run(None, feeds)
    ref = ReferenceEvaluator(model).run(None, feeds)
    return ours, ref


def _single(node, x: np.ndarray, out_shape, inits=(), opset: int = 17, elem=TensorProto.FLOAT) -> bytes:
    return make_model([node], [tensor("x", list(x.shape), elem)], [tensor("y", out_shape, elem)], inits, opset)


RNG = np.random.default_rng(0)


def test_mean_variance_normalization_matches_the_reference():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[0, 2, 3])
    ours, ref = _both(_single(node, x, None), {"x": x})
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "coords", "scale"),
    [
        ("linear", "pytorch_half_pixel", 2.0),
        ("linear", "half_pixel", 0.5),
        ("linear", "align_corners", 1.5),
        ("nearest", "asymmetric", 2.0),
        ("cubic", "half_pixel", 1.75),
    ],
)
def test_resize_modes_torch_emits_match_the_reference(mode, coords, scale):
    x = RNG.standard_normal((1, 2, 6, 5)).astype(np.float32)
    scales = const("scales", np.array([1, 1, scale, scale], np.float32))
    node = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        mode=mode,
        coordinate_transformation_mode=coords,
        nearest_mode="floor",
    )
    ours, ref = _both(_single(node, x, None, [scales]), {"x": x})
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-5)


def test_grouped_dilated_1d_conv_transpose_matches_the_reference():
    x = RNG.standard_normal((2, 4, 7)).astype(np.float32)
    w = const("w", RNG.standard_normal((4, 3, 3)).astype(np.float32))
    b = const("b", RNG.standard_normal(6).astype(np.float32))
    node = helper.make_node(
        "ConvTranspose",
        ["x", "w", "b"],
        ["y"],
        group=2,
        strides=[2],
        dilations=[2],
        pads=[1, 2],
        output_padding=[1],
    )
    model = _single(node, x, None, [w, b])
    ours = InferenceSession(model, threads=1).run(None, {"x": x})
    theirs = ort_session(model).run(None, {"x": x})  # onnx.reference reshapes grouped weights wrongly
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5, atol=1e-5)


def test_opset_11_softmax_uses_that_opsets_default_axis_and_flattening():
    """Softmax's default axis was 1 and flattened the trailing dims before opset 13."""
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    model = _single(helper.make_node("Softmax", ["x"], ["y"]), x, None, opset=11)
    ours = InferenceSession(model, threads=1).run(None, {"x": x})
    theirs = ort_session(model).run(None, {"x": x})  # onnx.reference applies opset 13's semantics here
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-5)
    np.testing.assert_allclose(ours[0].reshape(2, -1).sum(axis=1), 1.0, rtol=1e-5)
    assert registry.spec(("", "Softmax")).schema_defaults(11)["axis"] == 1


def test_qlinearconv_with_uint8_weights_at_zero_point_255_is_exact():
    """Weights 255 away from their zero point are no int8 operand: the exact numpy path runs."""
    x = RNG.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    w = RNG.integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)
    inits = [
        const("xs", np.float32(0.02)),
        const("xz", np.uint8(128)),
        const("w", w),
        const("ws", np.float32(0.01)),
        const("wz", np.uint8(255)),
        const("ys", np.float32(0.5)),
        const("yz", np.uint8(100)),
    ]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1])
    ours, ref = _both(_single(node, x, None, inits, elem=TensorProto.UINT8), {"x": x})
    assert np.abs(ours[0].astype(int) - ref[0].astype(int)).max() <= 1
    assert (ours[0] == ref[0]).mean() > 0.99


def test_bidirectional_lstm_with_sequence_lengths_matches_the_reference():
    seq, batch, inp, hid = 5, 3, 4, 6
    x = RNG.standard_normal((seq, batch, inp)).astype(np.float32)
    inits = [
        const("w", RNG.standard_normal((2, 4 * hid, inp)).astype(np.float32) * 0.5),
        const("r", RNG.standard_normal((2, 4 * hid, hid)).astype(np.float32) * 0.5),
        const("b", RNG.standard_normal((2, 8 * hid)).astype(np.float32) * 0.1),
        const("lens", np.array([5, 3, 1], np.int32)),
    ]
    node = helper.make_node(
        "LSTM", ["x", "w", "r", "b", "lens"], ["y", "yh", "yc"], hidden_size=hid, direction="bidirectional"
    )
    model = make_model(
        [node], [tensor("x", list(x.shape))], [tensor("y", None), tensor("yh", None), tensor("yc", None)], inits
    )
    ours = InferenceSession(model, threads=1).run(None, {"x": x})
    theirs = ort_session(model).run(None, {"x": x})  # onnx.reference ignores sequence_lens when reversing
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_maxpool_1d_ceil_mode_with_indices_matches_the_reference():
    x = RNG.standard_normal((1, 2, 10)).astype(np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[3], strides=[2], ceil_mode=1, pads=[1, 0])
    model = make_model([node], [tensor("x", list(x.shape))], [tensor("y", None), tensor("i", None, TensorProto.INT64)])
    ours, ref = _both(model, {"x": x})
    np.testing.assert_array_equal(ours[0], ref[0])
    np.testing.assert_array_equal(ours[1], ref[1])


@pytest.mark.parametrize("a_type", [np.uint8, np.int8])
@pytest.mark.parametrize("b_type", [np.uint8, np.int8])
@pytest.mark.parametrize("per_axis", [False, True])
def test_qlinear_matmul_on_both_operand_types_per_tensor_and_per_axis(a_type, b_type, per_axis):
    """Constant B goes to the C GEMM when B - z_b fits int8, else to the exact numpy path;
    both must give the reference's codes."""
    lo_a, hi_a = np.iinfo(a_type).min, np.iinfo(a_type).max
    lo_b, hi_b = np.iinfo(b_type).min, np.iinfo(b_type).max
    a = RNG.integers(lo_a, hi_a + 1, (5, 16)).astype(a_type)
    b = RNG.integers(lo_b, hi_b + 1, (16, 6)).astype(b_type)
    n = 6 if per_axis else 1
    zb = RNG.integers(lo_b, hi_b + 1, n).astype(b_type) if b_type == np.uint8 else np.zeros(n, b_type)
    inits = [
        const("as", np.float32(0.03)),
        const("az", a_type(3)),
        const("b", b),
        const("bs", (RNG.random(n) * 0.02 + 0.005).astype(np.float32).reshape(-1 if per_axis else ())),
        const("bz", zb.reshape(-1 if per_axis else ())),
        const("ys", np.float32(0.7)),
        const("yz", a_type(5)),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    elem = TensorProto.UINT8 if a_type == np.uint8 else TensorProto.INT8
    model = make_model([node], [tensor("a", [5, 16], elem)], [tensor("y", None, elem)], inits, opset=21)
    ours, ref = _both(model, {"a": a})
    np.testing.assert_array_equal(ours[0], ref[0])


@pytest.mark.parametrize("b_type", [np.uint8, np.int8])
def test_qlinear_matmul_of_two_run_time_tensors_is_exact_batched(b_type):
    """Attention's QKᵀ shape (batch, heads, T, d) @ (batch, heads, d, T), B a run-time input:
    the exact product (float64 BLAS) requantized must give the reference's codes, including
    at the largest accumulator magnitude."""
    lo_b, hi_b = np.iinfo(b_type).min, np.iinfo(b_type).max
    a = RNG.integers(0, 256, (2, 3, 9, 64)).astype(np.uint8)
    b = RNG.integers(lo_b, hi_b + 1, (2, 3, 64, 7)).astype(b_type)
    a[0, 0, 0], b[0, 0, :, 0] = 255, hi_b  # the largest accumulator magnitude
    inits = [
        const("as", np.float32(0.021)),
        const("az", np.uint8(131)),
        const("bs", np.float32(0.013)),
        const("bz", b_type(7)),
        const("ys", np.float32(0.9)),
        const("yz", np.uint8(128)),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    b_elem = TensorProto.UINT8 if b_type == np.uint8 else TensorProto.INT8
    model = make_model(
        [node],
        [tensor("a", list(a.shape), TensorProto.UINT8), tensor("b", list(b.shape), b_elem)],
        [tensor("y", None, TensorProto.UINT8)],
        inits,
        opset=21,
    )
    ours, ref = _both(model, {"a": a, "b": b})
    np.testing.assert_array_equal(ours[0], ref[0])


def test_softmax_is_the_float64_value_rounded_once():
    """exp(x - max) / sum in float64, rounded to float32 once: the arithmetic the simulation uses
    (quant/float_ops.py), which no float32 summation order reproduces. ONNX Runtime's float32
    kernel (MLAS's exp, its own order) lands within a few tens of ulps of it."""
    x = (RNG.standard_normal((8, 12, 48, 48)) * 3).astype(np.float32)
    model = _single(helper.make_node("Softmax", ["x"], ["y"], axis=-1), x, None)
    ours = InferenceSession(model, threads=1).run(None, {"x": x})[0]
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    np.testing.assert_array_equal(ours, (e / e.sum(axis=-1, keepdims=True)).astype(np.float32))
    theirs = ort_session(model).run(None, {"x": x})[0]
    assert np.abs(ours.view(np.int32) - theirs.view(np.int32)).max() <= 32


def test_an_attribute_value_the_kernel_lacks_is_a_named_error_at_load():
    """The op's ``choices`` fact: Resize with antialias=1 is refused before anything runs."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    scales = const("scales", np.array([1, 1, 0.5, 0.5], np.float32))
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", mode="linear", antialias=1)
    with pytest.raises(InferenceError, match=r"'rs' \(Resize\): attribute antialias=1 is not supported"):
        InferenceSession(_single(node, x, None, [scales], opset=19))


def test_qlinear_softmax_is_the_quantized_float_softmax_and_close_to_ort():
    x = RNG.integers(0, 256, (2, 3, 7)).astype(np.uint8)
    inits = [
        const("xs", np.float32(0.05)),
        const("xz", np.uint8(120)),
        const("ys", np.float32(1 / 256)),
        const("yz", np.uint8(0)),
    ]
    node = helper.make_node(
        "QLinearSoftmax", ["x", "xs", "xz", "ys", "yz"], ["y"], domain="com.microsoft", axis=-1, opset=13
    )
    model = _single(node, x, None, inits, elem=TensorProto.UINT8)
    ours = InferenceSession(model, threads=1).run(None, {"x": x})[0]
    v = (x.astype(np.float32) - 120) * np.float32(0.05)
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    want = np.clip(np.rint(e / e.sum(axis=-1, keepdims=True) * 256), 0, 255)
    np.testing.assert_array_equal(ours, want)
    theirs = ort_session(model).run(None, {"x": x})[0]  # ORT's table-driven kernel rounds its own way
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


@pytest.mark.parametrize("elem", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_erf_is_within_a_few_ulp_of_the_exact_value_everywhere(elem):
    """Erf (GELU's core) runs in float32 arithmetic: within 8 ulp of libm's erf over the whole
    range, relative error included near 0 (where 1 - poly * exp(-x^2) loses every digit);
    float64 is exact.  NaN stays NaN, +-inf give +-1."""
    import math

    dtype = np.float32 if elem == TensorProto.FLOAT else np.float64
    x = np.concatenate(
        [np.linspace(-6, 6, 200_001), 10.0 ** np.arange(-30, 0.5, 0.25), -(10.0 ** np.arange(-30, 0.5, 0.25))]
    ).astype(dtype)
    x = np.concatenate([x, np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)])
    y = InferenceSession(_single(helper.make_node("Erf", ["x"], ["y"]), x, None, elem=elem), threads=1).run(
        None, {"x": x}
    )[0]
    assert y.dtype == dtype
    exact = np.array([math.erf(v) for v in x.astype(np.float64)])
    finite = ~np.isnan(exact)
    ulp = np.spacing(np.abs(exact[finite]).astype(dtype)).astype(np.float64)
    ulps = np.abs(y[finite].astype(np.float64) - exact[finite]) / np.maximum(ulp, np.finfo(dtype).smallest_subnormal)
    assert ulps.max() <= (8 if dtype == np.float32 else 0)
    assert np.isnan(y[-1]) and y[-3] == 1 and y[-2] == -1 and np.signbit(y[-4])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_stays_in_float32_and_matches_the_reference(approximate):
    x = (RNG.standard_normal((4, 257)) * 4).astype(np.float32)
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    ours, ref = _both(_single(node, x, None, opset=20), {"x": x})
    assert ours[0].dtype == np.float32
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("axis", [-1, -2, 1])
def test_layer_normalization_normalises_in_float64_and_rounds_once(axis):
    """The specification's steps with the statistics and the normalised value in float64, rounded
    once, then times scale and plus bias in float32 (the simulation's arithmetic,
    quant/float_ops.py); the reference's float32 statistics are a few ulps away."""
    x = (RNG.standard_normal((2, 5, 7, 96)) * 3 + 1).astype(np.float32)
    w, b = (RNG.standard_normal(x.shape[axis:]).astype(np.float32) for _ in range(2))
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv"], axis=axis, epsilon=1e-6)
    model = make_model(
        [node],
        [tensor("x", list(x.shape))],
        [tensor("y", None), tensor("mean", None), tensor("inv", None)],
        [const("w", w), const("b", b)],
        17,
    )
    ours, ref = _both(model, {"x": x})
    dims = tuple(range(axis % x.ndim, x.ndim))
    x64 = x.astype(np.float64)
    d = x64 - x64.mean(axis=dims, keepdims=True)
    std = np.sqrt(np.square(d).mean(axis=dims, keepdims=True) + np.float64(np.float32(1e-6)))
    np.testing.assert_array_equal(ours[0], (d / std).astype(np.float32) * w + b)
    np.testing.assert_array_equal(ours[2], (1 / std).astype(np.float32))
    for o, r in zip(ours, ref, strict=True):
        assert o.shape == r.shape and o.dtype == r.dtype
        np.testing.assert_allclose(o, r, rtol=2e-5, atol=2e-5)


def test_batch_normalization_rounds_exactly_as_the_reference():
    x = (RNG.standard_normal((2, 16, 9, 9)) * 3).astype(np.float32)
    s, b, m = (RNG.standard_normal(16).astype(np.float32) for _ in range(3))
    v = (RNG.random(16) + 0.1).astype(np.float32)
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-5)
    inits = [const("s", s), const("b", b), const("m", m), const("v", v)]
    ours, ref = _both(_single(node, x, None, inits, opset=15), {"x": x})
    assert np.array_equal(ours[0], ref[0])
