"""Composition: a structurally pruned model quantizes, exports and runs in our runtime like any other."""

import pytest
import torch

import compress
import runtime
from compress.models import MnistCNN, accuracy, train_classifier
from export.validate import compare


@pytest.mark.slow
def test_pruned_then_quantized_model_deploys(trained_mnist_cnn, mnist_loaders, mnist_split, tmp_path):
    train, test = mnist_loaders
    x = mnist_split.x_train[:8]
    pruned = compress.prune(trained_mnist_cnn, amount=0.5, structured=True, example_inputs=(x,), protect=["fc"])
    assert isinstance(pruned, MnistCNN) and pruned.conv2.out_channels < trained_mnist_cnn.conv2.out_channels
    torch.manual_seed(0)
    train_classifier(pruned, train, epochs=1)
    q = compress.quantize(pruned, train, max_batches=8, progress=False)
    assert accuracy(q, test) >= accuracy(pruned, test) - 1.0

    dense_q = compress.quantize(trained_mnist_cnn, train, max_batches=8, progress=False)
    small = compress.export_onnx(q, tmp_path / "pruned.onnx", (x,))
    dense = compress.export_onnx(dense_q, tmp_path / "dense.onnx", (x,))
    assert small.stat().st_size < 0.5 * dense.stat().st_size

    a = compare(q, runtime.InferenceSession(str(small), threads=1), mnist_split.x_test)
    assert a.codes_identical >= 0.999 and a.max_code_diff <= 1, a
