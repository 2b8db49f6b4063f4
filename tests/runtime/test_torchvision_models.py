"""End to end: torchvision resnet18 and mobilenet_v2 (random weights, fixed seed) quantized
by ONNX Runtime's quantize_static, run by the bundled runtime and by ORT on the same file.
The int8 logits (in output quantization steps) must be >= 99.9% identical, never more than
one step apart. Where ORT saturates (x86 without VNNI, issue 11) the files are quantized with
ORT's own ``reduce_range`` (7-bit weights), the setting ORT recommends on such CPUs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx_builders import export_fp32, ort_session, quantize_ort

from runtime import InferenceSession

pytestmark = pytest.mark.slow
SHAPE = (1, 3, 224, 224)


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v2"])
def fp32_model(request, tmp_path_factory):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, request.param)()
    return export_fp32(model, tmp_path_factory.mktemp(request.param) / "fp32.onnx", SHAPE)


def output_scale(path) -> float:
    model = onnx.load(str(path))
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "output")
    return float(
        next(onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name == dq.input[1])
    )


@pytest.mark.parametrize("fmt,per_channel", [("qdq", True), ("qop", True), ("qdq", False)])
def test_int8_logits_match_onnxruntime(fp32_model, tmp_path, fmt, per_channel):
    from tests.ort_agreement import ort_is_exact

    path = quantize_ort(fp32_model, tmp_path / f"{fmt}.onnx", SHAPE, fmt, per_channel, batches=2,
                        reduce_range=not ort_is_exact())
    x = np.random.default_rng(7).standard_normal((4, *SHAPE[1:]), dtype=np.float32)
    ours = InferenceSession(path, threads=2).run(None, {"input": x})[0]
    ref = ort_session(path).run(None, {"input": x})[0]
    steps = np.rint(np.abs(ours - ref) / output_scale(path))
    assert steps.max() <= 1, f"{steps.max()} steps apart"
    assert (steps == 0).mean() >= 0.999, f"only {(steps == 0).mean():.4%} identical"
