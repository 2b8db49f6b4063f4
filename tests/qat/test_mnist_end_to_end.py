"""End to end on MNIST-5k: QAT wins back what 4-bit PTQ loses, and matches PTQ at 8 bits."""

import pytest
import torch

import compress
from compress.models import accuracy, train_classifier

pytestmark = pytest.mark.slow


def _calib(loader, n=8):
    return [b for _, b in zip(range(n), loader, strict=False)]


def _qat(model, train, bits, per_channel, epochs=2, seed=0):
    calib = _calib(train)
    torch.manual_seed(seed)
    q = compress.prepare_qat(model, calib[0][0], calib_loader=calib, weight_bits=bits,
                             per_channel=per_channel, progress=False)
    return train_classifier(q, train, epochs=epochs, lr=1e-3)


def test_qat_recovers_4bit_per_tensor_weights(trained_mnist_cnn, mnist_loaders):
    train, test = mnist_loaders
    fp32 = accuracy(trained_mnist_cnn, test)
    ptq = accuracy(compress.quantize(trained_mnist_cnn, _calib(train), weight_bits=4, per_channel=False,
                                     progress=False), test)
    qat = accuracy(_qat(trained_mnist_cnn, train, 4, False), test)
    # PTQ's loss here depends on the CPU's float rounding during training: −4.3 points on a Xeon, −0.9 on a
    # Zen 4 (same seed), so the claims are margins that hold on both: PTQ loses, QAT wins most of it back
    assert ptq <= fp32 - 0.5, (fp32, ptq)  # the configuration is one where PTQ loses
    assert qat >= fp32 - 0.6 and qat >= ptq + 0.3, (fp32, ptq, qat)


def test_qat_int8_keeps_ptq_int8_accuracy(trained_mnist_cnn, mnist_split):
    """Over three training orders, not one: a single seed moved QAT by 0.5 points between CPU kinds
    (float rounding differs), so the claim is about the mean, with a per-seed floor."""
    from compress.data import split_loaders

    ptq, qat = [], []
    for seed in range(3):
        train, test = split_loaders(mnist_split, seed=seed)
        ptq.append(accuracy(compress.quantize(trained_mnist_cnn, _calib(train), progress=False), test))
        qat.append(accuracy(_qat(trained_mnist_cnn, train, 8, True, seed=seed), test))
    mean_ptq, mean_qat = sum(ptq) / 3, sum(qat) / 3
    assert mean_qat >= mean_ptq - 0.4 and min(qat) >= mean_ptq - 1.0, (ptq, qat)
