"""SmoothQuant keeps the float function and flattens the per-channel ranges of Linear inputs."""

import pytest
import torch
from torch import nn

import compress
from quant.smoothquant import SmoothedLinear


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    data = [torch.randn(16, 64) for _ in range(4)]
    for x in data:
        x[:, :3] *= 40.0  # outlier channels
    with torch.no_grad():
        model[0].weight[:3] = 40.0  # the LayerNorm passes them on, as in BERT
    return model, data


def _channel_spread(model, index, data):
    seen = []
    handle = model[index].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        for x in data:
            model(x)
    handle.remove()
    amax = torch.cat(seen).abs().amax(0)
    return float(amax.max() / amax.median())


def test_function_unchanged_and_ranges_flatter():
    model, data = _model_and_data()
    smoothed = compress.smooth_quant(model, data, alpha=0.5)
    assert isinstance(smoothed[1], SmoothedLinear) and isinstance(model[1], nn.Linear)
    x = data[0]
    with torch.no_grad():
        torch.testing.assert_close(smoothed(x), model(x), rtol=1e-4, atol=1e-4)
        spread_before = _channel_spread(model, 1, data)
        smoothed_inputs = []
        h = smoothed[1].linear.register_forward_pre_hook(lambda m, a: smoothed_inputs.append(a[0]))
        for x in data:
            smoothed(x)
        h.remove()
    amax = torch.cat(smoothed_inputs).abs().amax(0)
    assert float(amax.max() / amax.median()) < spread_before / 4


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_out_of_range_is_an_error(alpha):
    model, data = _model_and_data()
    with pytest.raises(compress.QuantizationError, match="alpha"):
        compress.smooth_quant(model, data, alpha=alpha)
