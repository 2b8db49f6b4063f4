"""The promise end to end: the bundled runtime executes the exported file and agrees with
the PyTorch simulation code for code (DESIGN.md §3; issue "bundled int8 runtime").

The simulation's eval forward reproduces the int8 kernels' arithmetic (exact integer
accumulators, fp32 requantization multipliers, QLinearAdd's fused-multiply-add form,
integer global pooling), so the output codes must be identical for ≥99.9% of elements
and never more than one step apart; ONNX Runtime on the same file is held to the same.
"""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import compress
import runtime
from compress.models import trained_like_batchnorm
from export.validate import compare, ort_session


def _check(qmodel, path, images: torch.Tensor) -> None:
    for label, sess in (
        ("runtime", runtime.InferenceSession(str(path), threads=1)),
        ("onnxruntime", ort_session(path.read_bytes())),
    ):
        a = compare(qmodel, sess, images, batch_size=50)
        assert a.codes_identical >= 0.999 and a.max_code_diff <= 1, (label, a)
        assert a.top1_agreement >= 0.995, (label, a)


@pytest.mark.slow
def test_mnist_cnn(trained_mnist_cnn, mnist_split, tmp_path):
    q = compress.quantize(trained_mnist_cnn, [mnist_split.x_train[i : i + 64] for i in range(0, 512, 64)],
                          method="kl", progress=False)
    path = compress.export_onnx(q, tmp_path / "mnist.onnx", (mnist_split.x_test[:2],))
    _check(q, path, mnist_split.x_test)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision(arch, mnist_split, tmp_path):
    """Random weights with trained-like BatchNorm, MNIST digits as 3×64×64 images (global pooling over 2×2)."""
    torch.manual_seed(0)
    images = F.interpolate(mnist_split.x_test[:200], size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    calib = F.interpolate(mnist_split.x_train[:128], size=(64, 64), mode="bilinear").repeat(1, 3, 1, 1)
    model = trained_like_batchnorm(getattr(torchvision.models, arch)(num_classes=10), (16, 3, 64, 64))
    q = compress.quantize(model, [calib[:64], calib[64:]], progress=False)
    path = compress.export_onnx(q, tmp_path / f"{arch}.onnx", (images[:2],))
    _check(q, path, images)
