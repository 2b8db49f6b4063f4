"""Float ops between quantizers: the simulation's form (quant/float_ops.py) and the runtime's
kernel give the same float32 bits (DESIGN.md "Float ops between quantizers").

Each case runs the op in our runtime from a one-op ONNX graph (as torch.onnx writes it) and in
``quant.float_ops`` on the same float32 values: values from calibration-like distributions plus
values built to sit on float32 rounding boundaries, where torch's own float32 kernels differ
from numpy's in the last ulp. The end-to-end test is the model the old arithmetic lost: a GPT-2
(tanh GELU, Pow, LayerNorm, causal Softmax) whose runtime output codes differed from the
simulation's in 0.2 % of the logits.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import runtime
from quant import float_ops
from runtime.ops import elementwise

aten = torch.ops.aten


def _run_onnx(nodes: list, x: np.ndarray, inits: list | None = None, opset: int = 18) -> np.ndarray:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return runtime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def _const(name: str, value) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def _inputs(seed: int = 0) -> np.ndarray:
    """Logit-, activation- and attention-score-like values, and their neighbours one ulp away."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, 4096), rng.normal(0, 6, 4096), rng.uniform(-12, 12, 4096)])
    x = x.astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf))])
    return x.reshape(6, 48, 128)


def _bits_equal(sim: torch.Tensor, got: np.ndarray) -> None:
    sim = sim.detach().numpy()
    assert sim.dtype == got.dtype == np.float32 and sim.shape == got.shape
    same = (sim.view(np.uint32) == got.view(np.uint32)) | (np.isnan(sim) & np.isnan(got))
    assert same.all(), f"{int((~same).sum())} of {same.size} differ, max {np.nanmax(np.abs(sim - got))}"


UNARY = {  # ATen op -> (ONNX op, attributes)
    aten.exp.default: ("Exp", {}),
    aten.tanh.default: ("Tanh", {}),
    aten.sigmoid.default: ("Sigmoid", {}),
    aten.erf.default: ("Erf", {}),
    aten.hardswish.default: ("HardSwish", {}),
    aten.hardsigmoid.default: ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
    aten.mish.default: ("Mish", {}),
}


@pytest.mark.parametrize("op", list(UNARY), ids=lambda op: op._schema.name)
def test_unary(op):
    x = _inputs()
    onnx_op, attrs = UNARY[op]
    got = _run_onnx([helper.make_node(onnx_op, ["x"], ["y"], **attrs)], x)
    _bits_equal(float_ops.FORMS[op](torch.from_numpy(x)), got)


def test_log_and_pow():
    x = np.abs(_inputs(1)) + np.float32(1e-3)
    _bits_equal(float_ops.FORMS[aten.log.default](torch.from_numpy(x)),
                _run_onnx([helper.make_node("Log", ["x"], ["y"])], x))
    x = _inputs(2)
    _bits_equal(float_ops.FORMS[aten.pow.Tensor_Scalar](torch.from_numpy(x), 3.0),
                _run_onnx([helper.make_node("Pow", ["x", "e"], ["y"])], x, [_const("e", 3.0)]))


@pytest.mark.parametrize("log", [False, True])
def test_softmax(log):
    x = _inputs(3)
    x[0, :, 64:] = np.float32(-3.4028235e38)  # masked attention positions (finfo.min, as HF writes)
    got = _run_onnx([helper.make_node("LogSoftmax" if log else "Softmax", ["x"], ["y"], axis=-1)], x)
    form = float_ops.FORMS[aten.log_softmax.int if log else aten.softmax.int]
    _bits_equal(form(torch.from_numpy(x), -1), got)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm(bias):
    rng = np.random.default_rng(4)
    x = (_inputs(4) * rng.uniform(0.1, 30, (6, 48, 1)) + rng.normal(0, 5, (6, 48, 1))).astype(np.float32)
    w, b = rng.normal(1, 0.2, 128).astype(np.float32), rng.normal(0, 0.2, 128).astype(np.float32)
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    got = _run_onnx([helper.make_node("LayerNormalization", inputs, ["y"], axis=-1, epsilon=1e-5)], x,
                    [_const("w", w), _const("b", b)])
    sim = float_ops.layer_norm(torch.from_numpy(x), [128], torch.from_numpy(w), torch.from_numpy(b) if bias else None,
                               1e-5)
    _bits_equal(sim, got)


def _gelu_nodes(approximate: str) -> tuple[list, list]:
    """torch.onnx's GELU decompositions (onnxscript torch_lib aten_gelu), constant for constant."""
    if approximate == "none":
        nodes = [helper.make_node("Div", ["x", "sqrt2"], ["t"]), helper.make_node("Erf", ["t"], ["e"]),
                 helper.make_node("Add", ["e", "one"], ["u"]), helper.make_node("Mul", ["half", "u"], ["v"]),
                 helper.make_node("Mul", ["x", "v"], ["y"])]
        return nodes, [_const("sqrt2", 1.4142135623730951), _const("one", 1.0), _const("half", 0.5)]
    nodes = [helper.make_node("Pow", ["x", "three"], ["c"]), helper.make_node("Mul", ["k", "c"], ["i1"]),
             helper.make_node("Add", ["x", "i1"], ["i2"]), helper.make_node("Mul", ["s", "i2"], ["i3"]),
             helper.make_node("Tanh", ["i3"], ["t"]), helper.make_node("Add", ["t", "one"], ["u"]),
             helper.make_node("Mul", ["half", "u"], ["v"]), helper.make_node("Mul", ["x", "v"], ["y"])]
    return nodes, [_const("three", 3.0), _const("k", 0.044715), _const("s", math.sqrt(2 / math.pi)),
                   _const("one", 1.0), _const("half", 0.5)]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_decomposed_and_fused(approximate):
    """torch.onnx's decomposition (opset 18) and ONNX's Gelu op (opset 20) both equal the simulation."""
    x = _inputs(5)
    sim = float_ops.gelu(torch.from_numpy(x), approximate)
    _bits_equal(sim, _run_onnx(*_gelu_nodes(approximate)[:1], x, _gelu_nodes(approximate)[1]))
    _bits_equal(sim, _run_onnx([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], x, opset=20))


def test_silu():
    x = _inputs(6)
    got = _run_onnx([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], x)
    _bits_equal(float_ops.silu(torch.from_numpy(x)), got)


def test_erf_coefficients_are_the_runtimes():
    assert float_ops.ERF_P == elementwise.ERF_P and float_ops.ERF_Q == elementwise.ERF_Q


def test_float_op_is_torch_in_training_and_the_file_in_eval():
    op = float_ops.FloatOp(aten.gelu.default)
    x = torch.randn(10_000, requires_grad=True)
    op.train()
    y = op(x)
    assert torch.equal(y, torch.nn.functional.gelu(x))
    y.sum().backward()
    assert x.grad is not None
    op.eval()
    assert torch.equal(op(x), float_ops.gelu(x))


@pytest.mark.slow
def test_gpt2_codes_identical_in_our_runtime(tmp_path):
    """A 2-layer GPT-2 from a config: 99.79 % identical logits with torch's float32 kernels in the
    simulation; identical with the shared arithmetic (and in ONNX Runtime, exact on this path)."""
    transformers = pytest.importorskip("transformers")
    import compress

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=1000, n_embd=64, n_layer=2, n_head=4, use_cache=False,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(cfg).eval()

    def batch(n: int, seed: int) -> dict:
        g = torch.Generator().manual_seed(seed)
        mask = torch.ones(n, 16, dtype=torch.long)
        mask[: n // 2, 11:] = 0
        return {"input_ids": torch.randint(0, 1000, (n, 16), generator=g), "attention_mask": mask}

    q = compress.quantize(model, [batch(8, 0)], progress=False)
    test = batch(2, 1)
    with torch.no_grad():
        sim = q(**test).logits.numpy()
    path = compress.export_onnx(q, tmp_path / "gpt2.onnx", dict(test))
    got = runtime.InferenceSession(str(path), threads=1).run(None, {k: v.numpy() for k, v in test.items()})[0]
    assert np.array_equal(sim, got)


def test_vector_norm():
    x = _inputs(7)
    got = _run_onnx([helper.make_node("ReduceL2", ["x", "axes"], ["y"], keepdims=1)], x,
                    [onnx.numpy_helper.from_array(np.array([-1], np.int64), "axes")])
    _bits_equal(float_ops.vector_norm(torch.from_numpy(x), 2.0, [-1], True), got)


class _LogitScale(torch.nn.Module):
    """Swin V2's attention temperature: exp of a clamped parameter, a constant of the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 16)
        self.logit_scale = torch.nn.Parameter(torch.log(10 * torch.ones(4, 1)))
        self.register_buffer("table", torch.zeros(4, 4))

    def forward(self, x):
        scale = torch.exp(torch.clamp(self.logit_scale, max=4.6052))
        scores = self.fc(x).reshape(-1, 4, 4) * scale
        masked = self.table.clone()
        masked[:, :1] = x[:1, :4].mean()  # written at run time: not a constant
        return torch.softmax(scores + masked, dim=-1)


def test_constants_are_folded_by_the_simulation(tmp_path):
    """exp(clamp(p)) is 10.0 in the simulation's arithmetic and 10.000001 in numpy's float32 exp,
    which torch.onnx's optimizer would use to fold it: the file must hold the simulation's value,
    and a buffer that an input-dependent op writes into must stay a computation."""
    import compress

    torch.manual_seed(0)
    model = _LogitScale().eval()
    calib = [torch.randn(8, 16) for _ in range(4)]
    q = compress.quantize(model, calib, progress=False)
    path = compress.export_onnx(q, tmp_path / "m.onnx", (calib[0],))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    assert any(v.shape == (4, 1) and np.all(v == np.float32(10.0)) for v in inits.values())
    x = torch.randn(8, 16)
    with torch.no_grad():
        sim = q(x).numpy()
    got = runtime.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    assert np.array_equal(sim, got)
