"""The promise end to end: the bundled runtime executes the exported file and agrees with
the PyTorch simulation code for code (DESIGN.md §3; issue "bundled int8 runtime").

The simulation's eval forward reproduces the int8 kernels' arithmetic (exact integer
accumulators, fp32 requantization multipliers, QLinearAdd's fused-multiply-add form,
integer global pooling), so the output codes must be identical for ≥99.9% of elements
and never more than one step apart; ONNX Runtime on the same file is held to the same where
it is exact (VNNI/AMX CPUs) and, with 7-bit weights (``weight_range='reduced'``), everywhere.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import compress
import runtime
from compress.models import trained_like_batchnorm
from export.validate import compare, ort_session
from tests.ort_agreement import assert_ort_agreement

RANGES = ["full", "reduced"]


def _check(qmodel, path, images: torch.Tensor, weight_range: str, saturated_top1: float) -> None:
    a = compare(qmodel, runtime.InferenceSession(str(path), threads=1), images, batch_size=50)
    assert a.codes_identical >= 0.999 and a.max_code_diff <= 1 and a.top1_agreement >= 0.995, a
    a = compare(qmodel, ort_session(path.read_bytes()), images, batch_size=50)
    assert_ort_agreement(a, reduced=weight_range == "reduced", saturated_top1=saturated_top1)


@pytest.mark.slow
@pytest.mark.parametrize("weight_range", RANGES)
def test_mnist_cnn(trained_mnist_cnn, mnist_split, tmp_path, weight_range):
    q = compress.quantize(trained_mnist_cnn, [mnist_split.x_train[i : i + 64] for i in range(0, 512, 64)],
                          method="kl", weight_range=weight_range, progress=False)
    path = compress.export_onnx(q, tmp_path / "mnist.onnx", (mnist_split.x_test[:2],))
    _check(q, path, mnist_split.x_test, weight_range, saturated_top1=0.95)  # Zen 3: 98.8 %


@pytest.mark.slow
@pytest.mark.parametrize("weight_range", RANGES)
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision(arch, mnist_split, tmp_path, weight_range):
    """Random weights with trained-like BatchNorm, MNIST digits as 3×64×64 images (global pooling over 2×2)."""
    torch.manual_seed(0)
    images = F.interpolate(mnist_split.x_test[:200], size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    calib = F.interpolate(mnist_split.x_train[:128], size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    model = trained_like_batchnorm(getattr(torchvision.models, arch)(num_classes=10), (16, 3, 64, 64))
    q = compress.quantize(model, [calib[:64], calib[64:]], weight_range=weight_range, progress=False)
    path = compress.export_onnx(q, tmp_path / f"{arch}.onnx", (images[:2],))
    _check(q, path, images, weight_range, saturated_top1=0.3)  # Zen 3, resnet18: 56.5 %
