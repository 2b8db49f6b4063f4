"""The validation layer at the runtime's door: each malformed model gets an InferenceError
naming the node, tensor and op type, before any kernel is built or any large allocation made."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_builders import const, make_model, tensor

from runtime import InferenceError, InferenceSession
from runtime.validate import DEFAULT_MEMORY_LIMIT, MEMORY_LIMIT_ENV, memory_limit

ZP = np.uint8(128)


def qdq_model(scale=0.1, zero_point=ZP, **conv_attrs) -> bytes:
    """x -> Q -> DQ -> Conv(DQ(w)) -> y, the shape every QDQ export has."""
    w = np.ones((2, 1, 3, 3), np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="quant_x"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xf"], name="dequant_x"),
        helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"], name="dequant_w", axis=0),
        helper.make_node("Conv", ["xf", "wf"], ["y"], name="conv", **conv_attrs),
    ]
    inits = [const("s", np.float32(scale)), const("z", zero_point), const("w", w),
             const("ws", np.full(2, 0.05, np.float32))]
    return make_model(nodes, [tensor("x", [1, 1, 6, 6])], [tensor("y", [1, 2, None, None])], inits)


def error(model: bytes, **kwargs) -> str:
    with pytest.raises(InferenceError) as info:
        InferenceSession(model, threads=1, **kwargs)
    return str(info.value)


def test_the_valid_model_runs():
    y = InferenceSession(qdq_model(), threads=1).run(None, {"x": np.ones((1, 1, 6, 6), np.float32)})[0]
    assert y.shape == (1, 2, 4, 4)


@pytest.mark.parametrize("scale", [0.0, -0.1, float("nan"), float("inf")])
def test_scales_must_be_finite_and_positive(scale):
    message = error(qdq_model(scale=scale))
    assert "node 'quant_x' (QuantizeLinear)" in message and "scale 's'" in message


def test_a_normalization_scale_may_be_negative_or_zero():
    """BatchNormalization's 'scale' is a gamma, not a quantization scale."""
    inits = [const("g", np.array([-1.0, 0.0], np.float32)), const("b", np.zeros(2, np.float32)),
             const("m", np.zeros(2, np.float32)), const("v", np.ones(2, np.float32))]
    model = make_model([helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn")],
                       [tensor("x", [1, 2, 2, 2])], [tensor("y", [1, 2, 2, 2])], inits)
    y = InferenceSession(model, threads=1).run(None, {"x": np.ones((1, 2, 2, 2), np.float32)})[0]
    np.testing.assert_allclose(y[0, 0], -1.0, rtol=1e-4)
    np.testing.assert_allclose(y[0, 1], 0.0)


def test_zero_point_must_be_an_integer_tensor():
    message = error(qdq_model(zero_point=np.float32(0.0)))
    assert "'quant_x' (QuantizeLinear)" in message


def test_zero_point_and_scale_sizes_must_agree():
    model = onnx.load_from_string(qdq_model())
    model.graph.initializer.append(const("wz", np.zeros(3, np.int8)))
    model.graph.node[2].input.append("wz")
    assert "zero point 'wz' has 3 values" in error(model.SerializeToString())


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ({"strides": [0, 1]}, "'strides'"),
        ({"pads": [-1, 0, 0, 0]}, "'pads'"),
        ({"dilations": [1, 2**40]}, "'dilations'"),
        ({"group": 0}, "'group'"),
        ({"kernel_shape": [3, 3], "bogus": 1}, "bogus"),
    ],
)
def test_attributes_out_of_range_name_the_node(attrs, words):
    message = error(qdq_model(**attrs))
    assert "node 'conv' (Conv)" in message and words in message


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda m: m.graph.initializer[2].__setattr__("raw_data", b"\x01" * 5), "initializer 'w': raw data holds 5"),
        (lambda m: m.graph.initializer[2].dims.__setitem__(0, 2**40), "initializer 'w'"),
        (lambda m: m.graph.initializer[2].dims.__setitem__(0, -3), "invalid dims"),
        (lambda m: m.graph.initializer[0].__setattr__("data_type", TensorProto.STRING), "not supported"),
        (lambda m: m.graph.output.append(tensor("ghost", [1])), "graph output 'ghost' is produced by no node"),
        (lambda m: m.graph.node[0].output.__setitem__(0, "xf"), "already written by"),
        (lambda m: m.graph.node[0].input.__setitem__(0, "y"), "cycle"),
        (lambda m: m.graph.node[3].input.__setitem__(0, "nowhere"), "'conv' (Conv) reads 'nowhere', which no"),
        (lambda m: m.graph.node[0].input.append("extra"), "node 'quant_x' (QuantizeLinear)"),
        (lambda m: m.graph.input[0].type.tensor_type.shape.dim.pop(), "node 'conv' (Conv): inconsistent shapes"),
    ],
)
def test_structural_faults_are_named(mutate, words):
    model = onnx.load_from_string(qdq_model())
    mutate(model)
    assert words in error(model.SerializeToString())


def test_corrupt_and_truncated_bytes_are_named():
    data = qdq_model()
    for cut in (1, 7, len(data) // 2, len(data) - 3):
        assert error(data[:cut]).startswith("<bytes>")
    assert "not a readable ONNX model" in error(b"\xff" * 64)


def test_unsupported_ops_are_listed_before_anything_else():
    model = make_model(
        [helper.make_node("NoSuchOp", ["x"], ["a"], name="first"), helper.make_node("Foo", ["a", "b", "c"], ["y"])],
        [tensor("x", [2])], [tensor("y", [2])],
    )
    message = error(model)
    assert "2 node(s)" in message and "'first' (NoSuchOp)" in message and "'Foo_1' (Foo)" in message


def test_memory_limit_refuses_before_allocating(monkeypatch):
    big = make_model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [tensor("x", [1024])],
                     [tensor("y", [1024])], [const("w", np.zeros(1024, np.float32))])
    InferenceSession(big, threads=1)  # 4 KiB fits the default
    assert "memory limit of 1000 bytes" in error(big, memory_limit=1000)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "2000")
    assert memory_limit() == 2000 and "memory limit of 2000 bytes" in error(big)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "lots")
    with pytest.raises(InferenceError, match=MEMORY_LIMIT_ENV):
        memory_limit()
    monkeypatch.delenv(MEMORY_LIMIT_ENV)
    assert memory_limit() == DEFAULT_MEMORY_LIMIT
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InferenceError, match="memory_limit"):
            memory_limit(bad)


def test_a_declared_tensor_over_the_limit_is_refused_at_load():
    """Batch is symbolic, but even one sample of the declared input is over the limit."""
    model = make_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [tensor("x", ["n", 2**40])],
                       [tensor("y", ["n", 2**40])])
    message = error(model)
    assert "would take at least 4398046511104 bytes" in message and "memory limit" in message


@pytest.mark.parametrize(
    ("op", "inputs", "inits"),
    [
        ("Tile", ["x", "r"], [const("r", np.array([2**20, 2**20], np.int64))]),
        ("Range", ["a", "b", "d"],
         [const("a", np.float32(0)), const("b", np.float32(2**40)), const("d", np.float32(1))]),
        ("Expand", ["x", "s"], [const("s", np.array([2**30, 4], np.int64))]),
    ],
)
def test_constant_driven_outputs_over_the_limit_are_refused_at_load(op, inputs, inits):
    """The declared output (a small [1]) is not believed: the bound sees what the node computes."""
    model = make_model([helper.make_node(op, inputs, ["y"], name="big")], [tensor("x", [1, 4])],
                       [tensor("y", [1])], inits)
    message = error(model, memory_limit=1 << 30)
    assert "tensor 'y' would take at least" in message and "memory limit of 1073741824 bytes" in message


def test_run_refuses_a_shape_input_that_would_exceed_the_limit():
    """ConstantOfShape driven by an input: the run-time check sees the value before any kernel."""
    model = make_model(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill",
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))],
        [tensor("shape", [2], TensorProto.INT64)], [tensor("y", None)],
    )
    session = InferenceSession(model, threads=1, memory_limit=1 << 20)
    assert session.run(None, {"shape": np.array([4, 4], np.int64)})[0].shape == (4, 4)
    with pytest.raises(InferenceError, match="'y' would take at least 4398046511104 bytes"):
        session.run(None, {"shape": np.array([2**20, 2**20], np.int64)})


def test_threads_must_be_a_positive_integer():
    for bad in (0, -2, "4", 2.5):
        with pytest.raises(InferenceError, match="threads"):
            InferenceSession(qdq_model(), threads=bad)
