"""Accuracy-aware PTQ: where 4-bit per-tensor weights cost the MNIST CNN more than the bound,
the fewest layers are kept float and the bound holds."""

import pytest

import compress
from compress.accuracy_control import quantize_with_accuracy_control
from compress.models import accuracy

pytestmark = pytest.mark.slow


def test_bound_met_with_fewest_layers_float(trained_mnist_cnn, mnist_loaders):
    train, test = mnist_loaders
    calib = [b for _, b in zip(range(4), train, strict=False)]
    test_batches = list(test)

    def eval_fn(model):
        return accuracy(model, test_batches)

    options = dict(weight_bits=4, per_channel=False, progress=False)
    fp32, max_drop = eval_fn(trained_mnist_cnn), 0.5
    # ranking by weight SQNR: one quantization per greedy round (the metric ranking adds one per layer)
    q = quantize_with_accuracy_control(trained_mnist_cnn, calib, eval_fn=eval_fn, max_drop=max_drop,
                                       ranking="sqnr", **options)
    report = q.accuracy_report
    assert report.fp32 == fp32 and fp32 - report.quantized > max_drop  # plain PTQ breaks the bound here
    assert fp32 - eval_fn(q) <= max_drop and report.final == eval_fn(q)
    layers = [r.name for r in report.layers]
    assert 1 <= len(report.kept_float) < len(layers)
    assert report.kept_float == layers[: len(report.kept_float)]  # kept in rank order
    assert "kept float" in report.markdown()


def test_arguments_checked(trained_mnist_cnn, mnist_loaders):
    calib = [b for _, b in zip(range(2), mnist_loaders[0], strict=False)]
    with pytest.raises(compress.QuantizationError, match="max_drop"):
        compress.quantize(trained_mnist_cnn, calib, eval_fn=lambda m: 1.0, progress=False)
