"""The issue's must-show figures, asserted (slow: they train and calibrate real models)."""

import pytest
import torch
import torchvision

import compress
from compress.models import OutlierMLP, accuracy, heavy_tailed_batches, sqnr_db, trained_like_batchnorm


@pytest.mark.slow
@pytest.mark.parametrize("method", ["minmax", "percentile", "kl"])
def test_mnist_int8_within_0_3_points_of_fp32(trained_mnist_cnn, mnist_loaders, method):
    train, test = mnist_loaders
    fp32 = accuracy(trained_mnist_cnn, test)
    assert fp32 >= 98.0
    q = compress.quantize(trained_mnist_cnn, train, method=method, max_batches=16, progress=False)
    assert accuracy(q, test) >= fp32 - 0.3


@pytest.mark.slow
def test_percentile_and_kl_beat_minmax_on_heavy_tails():
    torch.manual_seed(0)
    model = OutlierMLP().eval()
    calib = heavy_tailed_batches(32, seed=0)
    test = torch.cat(heavy_tailed_batches(16, seed=1, outlier_rate=0.0))
    ref = model(test)
    sqnr = {m: sqnr_db(ref, compress.quantize(model, calib, method=m, progress=False)(test))
            for m in ("minmax", "percentile", "kl")}
    assert sqnr["percentile"] > sqnr["minmax"] + 6.0, sqnr
    assert sqnr["kl"] > sqnr["minmax"] + 6.0, sqnr


@pytest.mark.slow
def test_per_channel_weights_beat_per_tensor_on_mobilenet_v2():
    torch.manual_seed(0)
    model = trained_like_batchnorm(torchvision.models.mobilenet_v2(), (8, 3, 96, 96))
    calib = [torch.randn(4, 3, 96, 96) for _ in range(3)]
    test = torch.randn(8, 3, 96, 96)
    with torch.no_grad():
        ref = model(test)
        per_channel = sqnr_db(ref, compress.quantize(model, calib, progress=False)(test))
        per_tensor = sqnr_db(ref, compress.quantize(model, calib, per_channel=False, progress=False)(test))
    assert per_channel > per_tensor + 6.0, (per_channel, per_tensor)
