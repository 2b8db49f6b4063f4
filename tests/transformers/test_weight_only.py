"""Group-wise weight-only quantization: the numeric rules, and that GPTQ/AWQ beat RTN where
their reasons apply (correlated inputs; outlier input channels)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compress
from quant.errors import QuantError
from quant.weight_only import (
    GroupSpec,
    WeightOnlyLinear,
    awq_clip,
    awq_scale,
    collect_input_stats,
    dequantize_codes,
    gptq,
    rtn,
)


@pytest.mark.parametrize("bits", [2, 3, 16])
def test_unsupported_bits_are_named_errors(bits):
    with pytest.raises(QuantError, match="bits must be one of"):
        GroupSpec(bits=bits)
    with pytest.raises(compress.QuantizationError, match="bits must be one of"):
        compress.quantize_weight_only(nn.Linear(32, 8), bits=bits)


def test_static_quantize_rejects_2_bit_weights():
    calib = [torch.randn(4, 8)]
    with pytest.raises(compress.QuantizationError, match="weight_bits must be one of"):
        compress.quantize(nn.Sequential(nn.Linear(8, 4)), calib, weight_bits=2, progress=False)


@pytest.mark.parametrize("group", [0, 8, 48])
def test_group_size_must_be_a_power_of_two_of_at_least_16(group):
    with pytest.raises(QuantError, match="group_size"):
        GroupSpec(group_size=group)


def test_gptq_and_awq_need_calibration_data():
    with pytest.raises(compress.QuantizationError, match="calib_loader"):
        compress.quantize_weight_only(nn.Linear(32, 8), method="gptq")


@pytest.mark.parametrize("bits,symmetric", [(4, True), (4, False), (8, True), (8, False)])
def test_rtn_codes_round_trip_within_half_a_step(bits, symmetric):
    w = torch.randn(24, 100)  # K = 100: the last group of 32 is padded
    spec = GroupSpec(bits, 32, symmetric)
    codes, scale, zero = rtn(w, spec)
    assert codes.shape == (24, 128) and scale.shape == zero.shape == (24, 4)
    assert int(codes.max()) <= 2**bits - 1
    if symmetric:
        assert torch.all(zero == 2 ** (bits - 1))
    err = (dequantize_codes(codes, scale, zero, 100) - w).abs()
    step = scale.repeat_interleave(32, 1)[:, :100]
    assert torch.all(err <= step / 2 + 1e-6)


def test_module_computes_linear_with_the_dequantized_weight():
    w, b, x = torch.randn(16, 64), torch.randn(16), torch.randn(5, 64)
    spec = GroupSpec(4, 32, False)
    codes, scale, zero = rtn(w, spec)
    m = WeightOnlyLinear(codes, scale, zero, 64, spec, b)
    assert torch.equal(m(x), F.linear(x, dequantize_codes(codes, scale, zero, 64), b))


def _output_error(x, w, wq):
    return float(((x @ w.t() - x @ wq.t()) ** 2).mean())


def test_gptq_beats_rtn_on_correlated_inputs():
    torch.manual_seed(0)
    x = torch.randn(512, 16) @ torch.randn(16, 128) + 0.1 * torch.randn(512, 128)  # low-rank inputs
    w = torch.randn(64, 128)
    spec = GroupSpec(4, 32, False)
    q_rtn = dequantize_codes(*rtn(w, spec), 128)
    for act_order in (False, True):
        q_gptq = dequantize_codes(*gptq(w, x.double().t() @ x.double(), spec, act_order=act_order), 128)
        assert _output_error(x, w, q_gptq) < 0.5 * _output_error(x, w, q_rtn), act_order


def test_awq_beats_rtn_on_outlier_channels():
    torch.manual_seed(0)
    x = torch.randn(512, 128)
    x[:, :4] *= 30.0  # a few channels 30x larger, as in transformer activations
    w = torch.randn(64, 128)
    layer = nn.Linear(128, 64, bias=False)
    layer.weight.data.copy_(w)
    stats = collect_input_stats(nn.Sequential(layer), ["0"], [x], abs_stats=True, max_rows=512)["0"]
    spec = GroupSpec(4, 32, False)
    s = awq_scale(w, stats, spec)
    assert s is not None and float(s[:4].mean()) > float(s[4:].mean())
    clip = awq_clip(w * s, x / s, spec)
    q_awq = dequantize_codes(*rtn(w * s, spec, clip), 128) / s
    q_rtn = dequantize_codes(*rtn(w, spec), 128)
    assert _output_error(x, w, q_awq) < 0.8 * _output_error(x, w, q_rtn)


def test_facade_swaps_linears_and_leaves_the_model_untouched():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    calib = [torch.randn(8, 64) for _ in range(4)]
    q = compress.quantize_weight_only(model, calib, method="gptq", group_size=32)
    assert isinstance(model[0], nn.Linear)
    assert isinstance(q[0], WeightOnlyLinear) and isinstance(q[2], WeightOnlyLinear)
    x = torch.randn(16, 64)
    with torch.no_grad():
        rel = float((q(x) - model(x)).norm() / model(x).norm())
    assert rel < 0.2  # int4 on a random 64-32-10 MLP
    kept = compress.quantize_weight_only(model, skip=["2"])
    assert isinstance(kept[2], nn.Linear)
