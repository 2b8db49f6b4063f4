"""Simulation vs ONNX Runtime on the same file: the agreement DESIGN.md §3 promises.

The fake-quant torch model and the exported file should produce the same output
codes for almost every element, never more than one step apart, and the same
top-1. Output codes are recovered from the dequantized outputs with the model's
last quantizer: ``round(y / s) + z``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from quant import policy
from quant.fake_quant import FakeQuantize


def output_quantizer(gm: fx.GraphModule) -> FakeQuantize | None:
    """The FakeQuantize that sets the grid of the (first) model output, if any."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    node = out[0] if isinstance(out, (tuple, list)) else out
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(fq := gm.get_submodule(node.target), FakeQuantize):
            return fq
        passthrough = node.op == "call_method" and policy.method_kind(str(node.target)) == policy.EXACT
        passthrough |= node.op == "call_function" and policy.function_kind(node.target) == policy.EXACT
        if not passthrough:
            return None
        node = node.args[0]
    return None


@dataclass(frozen=True)
class Agreement:
    """How closely ORT reproduces the simulation on a set of inputs."""

    n: int
    top1_agreement: float  # fraction of inputs with the same argmax
    max_abs_diff: float  # max |sim − ort| over all outputs
    max_step_diff: float  # the same, in output quantization steps
    codes_identical: float  # fraction of output codes exactly equal
    max_code_diff: int

    def row(self) -> list[str]:
        return [
            f"{100 * self.top1_agreement:.2f}%",
            f"{self.max_step_diff:.2f}",
            f"{100 * self.codes_identical:.3f}%",
            str(self.max_code_diff),
        ]


def ort_session(model_bytes: bytes, *, optimize: bool = True):
    """A CPU ONNX Runtime session (one thread: the comparison is about numbers, not speed)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def compare(qmodel: fx.GraphModule, session, inputs: torch.Tensor, batch_size: int = 100) -> Agreement:
    """Run both on ``inputs`` (in batches, exercising the dynamic batch) and measure agreement."""
    fq = output_quantizer(qmodel)
    if fq is None:
        raise ValueError("the model output is not quantized: no output grid to count steps on")
    scale, zp = float(fq.scale), int(fq.zero_point)
    name = session.get_inputs()[0].name
    sims, orts = [], []
    for start in range(0, len(inputs), batch_size):
        x = inputs[start : start + batch_size]
        sims.append(qmodel(x).float().numpy())
        orts.append(session.run(None, {name: x.numpy()})[0])
    sim, ort_out = np.concatenate(sims), np.concatenate(orts)
    sim_codes = np.round(sim / np.float32(scale)).astype(np.int64) + zp
    ort_codes = np.round(ort_out / np.float32(scale)).astype(np.int64) + zp
    diff = np.abs(sim - ort_out)
    return Agreement(
        n=len(inputs),
        top1_agreement=float((sim.argmax(-1) == ort_out.argmax(-1)).mean()),
        max_abs_diff=float(diff.max()),
        max_step_diff=float(diff.max() / scale),
        codes_identical=float((sim_codes == ort_codes).mean()),
        max_code_diff=int(np.abs(sim_codes - ort_codes).max()),
    )


# --- is ONNX Runtime exact on this machine? ---------------------------------------------
REDUCED_RANGE_ADVICE = (
    "quantize with weight_range='reduced' (7-bit weights, as ONNX Runtime's reduce_range and oneDNN use "
    "on such CPUs) to get files ONNX Runtime executes exactly here"
)


@dataclass(frozen=True)
class OrtExactness:
    """What the probe found: whether ORT's u8×s8 integer kernels are exact on this CPU."""

    exact: bool
    detail: str  # what was computed, and how far it was off
    machine: str  # CPU model, int8 features, our runtime's path

    def note(self) -> str:
        """The sentence reports print beside ORT's agreement figures."""
        if self.exact:
            return f"ONNX Runtime's u8×s8 kernels are exact on this CPU ({self.machine})."
        return (f"ONNX Runtime saturates u8×s8 pair sums in int16 on this CPU ({self.machine}: {self.detail}); "
                f"its int8 outputs differ from the simulation for full-range weights: {REDUCED_RANGE_ADVICE}.")


def _probe_models(k: int) -> list[tuple[str, bytes, dict[str, np.ndarray], np.ndarray]]:
    """Two tiny integer models whose u8×s8 pair sums (2·255·127) overflow int16, with exact answers:
    MatMulInteger (ORT's QGEMM, behind QLinearMatMul and Gemm) and a 1×1 QLinearConv (its conv path)."""
    from onnx import TensorProto, helper, numpy_helper

    a = np.full((8, k), 255, np.uint8)
    b = np.full((k, 16), 127, np.int8)
    mm = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "probe_matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [8, 16])],
        [numpy_helper.from_array(b, "b")],
    )
    # conv: y = x·w summed over k channels; scales chosen so the output code is acc / 2^16 exactly
    x = np.full((1, k, 4, 4), 255, np.uint8)
    w = np.full((16, k, 1, 1), 127, np.int8)
    y_scale = np.float32(2.0**16)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.array(1.0, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    conv = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])], "probe_conv",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 16, 4, 4])],
        inits,
    )
    acc = 255 * 127 * k
    conv_want = np.full((1, 16, 4, 4), min(255, round(acc / float(y_scale))), np.uint8)

    def model(graph) -> bytes:
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        return m.SerializeToString()

    return [
        ("MatMulInteger", model(mm), {"a": a}, np.full((8, 16), acc, np.int32)),
        ("QLinearConv", model(conv), {"x": x}, conv_want),
    ]


@functools.cache
def probe_onnxruntime(k: int = 64) -> OrtExactness:
    """Run the probe models on ONNX Runtime's CPU provider and compare with the exact answer.

    Detection, not a guess from CPU flags: ORT's kernel choice depends on its build and version
    as much as on the CPU. Raises ImportError when onnxruntime is not installed."""
    from runtime.machine import describe

    off = []
    for name, model_bytes, feed, want in _probe_models(k):
        got = ort_session(model_bytes).run(None, feed)[0]
        if not np.array_equal(got, want):
            off.append(f"{name} gave {int(got.flat[0])} for {int(want.flat[0])}")
    return OrtExactness(exact=not off, detail="; ".join(off) or "probe results exact", machine=describe())
