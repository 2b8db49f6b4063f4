"""Static W8A8 with a float residual stream (``float_adds=True``): every Linear's input and
weights are int8, and a Linear whose output only feeds a residual add keeps its int32
accumulator (times s_x·s_w) instead of a uint8 grid; the exported file computes the same."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress
import runtime
from quant.fake_quant import WeightFakeQuantize
from quant.prepare import quantizers


class Block(nn.Module):
    """A post-LN transformer MLP block: LN -> FC1 -> GELU -> FC2 -> + residual -> LN."""

    def __init__(self):
        super().__init__()
        self.ln, self.ln2 = nn.LayerNorm(64), nn.LayerNorm(64)
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 64)

    def forward(self, x):
        h = self.ln(x)
        return self.ln2(h + self.fc2(F.gelu(self.fc1(h))))


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block()).eval()
    with torch.no_grad():  # an outlier feature in the residual stream, as in BERT
        model[0].fc2.bias[3] = 40.0
    return model, [torch.randn(4, 10, 64) * 3 for _ in range(4)], torch.randn(2, 10, 64) * 3


def test_linear_into_float_add_keeps_its_accumulator(tmp_path):
    model, calib, x = _model_and_data()
    q = compress.quantize(model, calib, float_adds=True, progress=False)
    labels = [m.name for _, m in quantizers(q) if not isinstance(m, WeightFakeQuantize)]
    assert not any("fc2 output" in label for label in labels), labels  # no grid before the float add
    assert any("fc2 input" in label for label in labels) and any("fc1 output" in label for label in labels)
    q_int = compress.quantize(model, calib, float_adds=False, progress=False)
    with torch.no_grad():
        ref = model(x)
        err_float, err_int = (q(x) - ref).abs().mean(), (q_int(x) - ref).abs().mean()
    assert float(err_float) < 0.5 * float(err_int)
    path = compress.export_onnx(q, tmp_path / "float_residual.onnx", (x,))
    with torch.no_grad():
        sim = q(x).numpy()
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(ours, sim, rtol=0, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(theirs, sim, rtol=0, atol=1e-5)
