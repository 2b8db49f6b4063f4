"""A QAT model, once in eval mode, is what compress.export_onnx writes: ONNX Runtime agrees."""

import pytest
import torch
import torch.nn.functional as F

import compress
from compress.models import MnistCNN

pytest.importorskip("onnxruntime")
from export.validate import compare, ort_session  # noqa: E402
from tests.ort_agreement import assert_ort_agreement  # noqa: E402


@pytest.mark.parametrize("learnable", [False, True])
def test_trained_qat_model_exports_and_onnxruntime_agrees(tmp_path, learnable):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(6)]
    q = compress.prepare_qat(MnistCNN(width=4).eval(), data[0][0], calib_loader=data[:2], progress=False,
                             learnable_scales=learnable, freeze_bn_after=4)  # BN frozen, observers still on
    opt = torch.optim.SGD(q.parameters(), lr=0.05)
    for x, y in data:
        loss = F.cross_entropy(q(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()  # nothing else: no freeze, no convert
    path = compress.export_onnx(q, tmp_path / "qat.onnx", data[0][0])
    agreement = compare(q, ort_session(path.read_bytes()), torch.randn(200, 1, 28, 28, generator=g))
    assert_ort_agreement(agreement, codes=0.99, top1=0.99, saturated_top1=0.9)
