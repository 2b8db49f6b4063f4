"""The numeric contract of DESIGN.md §3, element by element."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quant.spec import (
    ACT_INT8,
    ACT_UINT8,
    WEIGHT_INT8_PER_CHANNEL,
    QuantSpec,
    fake_quantize,
    fake_quantize_bias,
    qparams,
    quantize_int,
)


def test_ranges_of_specs():
    assert (ACT_UINT8.qmin, ACT_UINT8.qmax) == (0, 255)
    assert (ACT_INT8.qmin, ACT_INT8.qmax) == (-128, 127)
    assert (WEIGHT_INT8_PER_CHANNEL.qmin, WEIGHT_INT8_PER_CHANNEL.qmax) == (-127, 127)
    four = QuantSpec(bits=4, signed=True, symmetric=True, narrow=True)
    assert (four.qmin, four.qmax) == (-7, 7)


def test_asymmetric_qparams_cover_range_and_zero_exactly():
    scale, zp = qparams(torch.tensor(-1.0), torch.tensor(3.0), ACT_UINT8)
    assert torch.isclose(scale, torch.tensor(4.0 / 255))
    assert int(zp) == 64  # round(1 / (4/255)) = round(63.75)
    x = torch.tensor([0.0])
    assert float(fake_quantize(x, scale, zp, ACT_UINT8)) == 0.0  # zero is exact (padding)


def test_positive_only_range_is_widened_to_include_zero():
    scale, zp = qparams(torch.tensor(2.0), torch.tensor(4.0), ACT_UINT8)
    assert int(zp) == 0 and torch.isclose(scale, torch.tensor(4.0 / 255))


def test_symmetric_weights_per_channel():
    lo, hi = torch.tensor([-2.0, -0.5]), torch.tensor([1.0, 0.25])
    scale, zp = qparams(lo, hi, WEIGHT_INT8_PER_CHANNEL)
    assert torch.allclose(scale, torch.tensor([2.0 / 127, 0.5 / 127]))
    assert zp.tolist() == [0, 0]


def test_zero_range_gets_finite_positive_scale():
    scale, zp = qparams(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 1.0]), WEIGHT_INT8_PER_CHANNEL)
    assert torch.all(scale > 0) and torch.all(torch.isfinite(scale))
    w = torch.zeros(2, 3)
    assert torch.equal(fake_quantize(w, scale, zp, WEIGHT_INT8_PER_CHANNEL, axis=0), w)


def test_ties_round_half_to_even_and_division_by_scale():
    scale, zp = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32)
    spec = ACT_INT8
    x = torch.tensor([0.05, 0.15, 0.25, -0.05, -0.15])
    expected = torch.round(x / scale)  # torch.round is half-to-even, like ONNX
    assert torch.equal(quantize_int(x, scale, zp, spec).float(), expected)
    two = quantize_int(torch.tensor([2.5]), torch.tensor(1.0), zp, spec)
    assert torch.equal(two, torch.tensor([2], dtype=torch.int32))


def test_saturation():
    scale, zp = torch.tensor(1.0), torch.tensor(10, dtype=torch.int32)
    q = quantize_int(torch.tensor([-100.0, 1000.0]), scale, zp, ACT_UINT8)
    assert q.tolist() == [0, 255]


def test_ste_gradient_passes_inside_and_stops_outside():
    scale, zp = torch.tensor(0.1), torch.tensor(0, dtype=torch.int32)
    x = torch.tensor([0.3, 50.0, -50.0], requires_grad=True)
    fake_quantize(x, scale, zp, ACT_INT8).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0]


def test_bias_is_int32_at_input_times_weight_scale():
    b = torch.tensor([0.123456, -1.0])
    s_in, s_w = torch.tensor(0.02), torch.tensor([0.01, 0.03])
    bq = fake_quantize_bias(b, s_in, s_w)
    step = s_in * s_w
    codes = bq / step
    assert torch.allclose(codes, torch.round(codes), atol=1e-3)
    assert torch.all((bq - b).abs() <= step / 2 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=1, max_size=64),
    st.floats(-100, 0, width=32),
    st.floats(0.0625, 100, width=32),
    st.sampled_from([ACT_UINT8, ACT_INT8]),
)
def test_fake_quant_output_lies_on_grid(values, lo, hi, spec):
    x = torch.tensor(values, dtype=torch.float32)
    scale, zp = qparams(torch.tensor(lo), torch.tensor(hi), spec)
    y = fake_quantize(x, scale, zp, spec)
    q = quantize_int(x, scale, zp, spec)
    assert torch.all((q >= spec.qmin) & (q <= spec.qmax))
    assert torch.equal(y, (q.float() - zp.float()) * scale)  # DequantizeLinear exactly
    inside = (x >= (spec.qmin - zp) * scale) & (x <= (spec.qmax - zp) * scale)
    assert torch.all((y - x).abs()[inside] <= scale / 2 * (1 + 1e-5))
