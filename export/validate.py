"""Simulation vs ONNX Runtime on the same file: the agreement DESIGN.md §3 promises.

The fake-quant torch model and the exported file should produce the same output
codes for almost every element, never more than one step apart, and the same
top-1. Output codes are recovered from the dequantized outputs with the model's
last quantizer: ``round(y / s) + z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from quant.fake_quant import FakeQuantize

EXACT_PASSTHROUGH = {"flatten", "reshape", "view", "contiguous"}


def output_quantizer(gm: fx.GraphModule) -> FakeQuantize | None:
    """The FakeQuantize that sets the grid of the (first) model output, if any."""
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    node = out[0] if isinstance(out, (tuple, list)) else out
    while isinstance(node, fx.Node):
        if node.op == "call_module" and isinstance(fq := gm.get_submodule(node.target), FakeQuantize):
            return fq
        passthrough = node.op == "call_method" and node.target in EXACT_PASSTHROUGH
        passthrough |= node.op == "call_function" and node.target in (torch.flatten, torch.reshape)
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
