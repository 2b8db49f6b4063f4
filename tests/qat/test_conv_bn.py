"""QuantConvBn2d: BN trained with batch statistics, folded with running ones, frozen on schedule."""

import copy

import pytest
import torch
from torch import nn

from compress.models import MnistCNN
from compress.ptq import build_qconfig
from quant import QuantConv2d, QuantLinear, prepare, quantizers
from quant.errors import QuantError
from quant.fuse import fold_bn_into_conv
from quant.qat import QuantConvBn2d, freeze_bn_stats
from quant.spec import WEIGHT_INT8_PER_CHANNEL


def _conv_bn(cin=3, cout=5, bias=False, momentum=0.1):
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(cout, momentum=momentum)
    with torch.no_grad():  # non-trivial statistics and affine parameters
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return conv, bn


@pytest.mark.parametrize("bias, momentum", [(False, 0.1), (True, None)])
def test_training_without_fake_quant_is_conv_then_batchnorm(bias, momentum):
    conv, bn = _conv_bn(bias=bias, momentum=momentum)
    ref_bn = copy.deepcopy(bn).train()
    q = QuantConvBn2d(conv, copy.deepcopy(bn), WEIGHT_INT8_PER_CHANNEL, act="relu", name="c").train()
    q.weight_quant.enable(observe=True, quant=False)
    for _ in range(3):
        x = torch.randn(4, 3, 8, 8)
        torch.testing.assert_close(q(x), torch.relu(ref_bn(conv(x))), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(q.bn.running_var, ref_bn.running_var)
    assert int(q.bn.num_batches_tracked) == 3


def test_gradients_reach_weight_and_batchnorm_affine():
    conv, bn = _conv_bn()
    q = QuantConvBn2d(conv, bn, WEIGHT_INT8_PER_CHANNEL, name="c").train()
    q.weight_quant.enable(observe=True, quant=True)
    q(torch.randn(4, 3, 8, 8)).square().sum().backward()
    for p in (q.weight, q.bn.weight, q.bn.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_eval_is_the_ptq_folded_convolution_exactly():
    conv, bn = _conv_bn(bias=True)
    q = QuantConvBn2d(conv, bn.eval(), WEIGHT_INT8_PER_CHANNEL, name="c")
    folded = QuantConv2d(fold_bn_into_conv(conv, bn), WEIGHT_INT8_PER_CHANNEL, name="c")
    assert torch.equal(q.effective_weight(), folded.effective_weight())
    assert torch.equal(q.effective_bias(), folded.effective_bias())
    for m in (q, folded):
        m.weight_quant.enable(observe=True, quant=True)
        m.eval()
    x, s_in = torch.randn(2, 3, 8, 8), torch.tensor(0.02)
    assert torch.equal(q(x, s_in), folded(x, s_in))


def test_bn_statistics_freeze_after_the_configured_steps():
    conv, bn = _conv_bn()
    q = QuantConvBn2d(conv, bn, WEIGHT_INT8_PER_CHANNEL, name="c", freeze_bn_after=2).train()
    q.weight_quant.enable(observe=True, quant=True)
    seen = []
    for _ in range(4):
        q(torch.randn(4, 3, 8, 8) + 1.0)
        seen.append(q.bn.running_mean.clone())
    assert not torch.equal(seen[0], seen[1])
    assert torch.equal(seen[1], seen[2]) and torch.equal(seen[2], seen[3])
    assert q.bn_frozen and int(q.bn_steps) == 2
    x = torch.randn(2, 3, 8, 8)
    train_out = q(x)
    assert torch.equal(train_out, q.eval()(x))  # frozen training runs the int8 graph itself


def test_manual_freeze_and_zero_gamma_channels_stay_finite():
    conv, bn = _conv_bn()
    with torch.no_grad():
        bn.weight[1] = 0.0  # a pruned channel
    q = QuantConvBn2d(conv, bn, WEIGHT_INT8_PER_CHANNEL, name="c").train()
    q.weight_quant.enable(observe=True, quant=True)
    y = q(torch.randn(4, 3, 8, 8))
    assert torch.isfinite(y).all() and torch.allclose(y[:, 1], bn.bias[1].expand_as(y[:, 1]))
    freeze_bn_stats(q)
    assert q.bn_frozen


def test_batchnorm_without_running_stats_is_rejected_by_name():
    conv = nn.Conv2d(1, 2, 3)
    with pytest.raises(QuantError, match="'block.conv'.*running statistics"):
        bn = nn.BatchNorm2d(2, track_running_stats=False)
        QuantConvBn2d(conv, bn, WEIGHT_INT8_PER_CHANNEL, name="block.conv")


def test_prepare_qat_keeps_conv_bn_pairs_with_fused_relu():
    model = MnistCNN(width=4).eval()
    q = prepare(model, (torch.randn(2, 1, 28, 28),), build_qconfig("minmax"), qat=True)
    mods = dict(q.named_modules())
    convs = [mods[f"conv{i}"] for i in range(1, 5)]
    assert all(isinstance(m, QuantConvBn2d) and m.act == "relu" for m in convs)
    assert isinstance(mods["fc"], QuantLinear)
    bns = [n for n, m in mods.items() if isinstance(m, nn.BatchNorm2d)]
    assert sorted(bns) == [f"conv{i}.bn" for i in range(1, 5)]  # only inside the fused modules
    acts = [m for _, m in quantizers(q) if "weight" not in m.name]
    assert len(acts) == 7  # the same edges as PTQ: input, 4 convs, the add, the logits
