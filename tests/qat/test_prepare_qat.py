"""compress.prepare_qat: train mode, STE, schedules, calibration start, LSQ, eval determinism."""

import copy

import pytest
import torch
import torch.nn.functional as F

import compress
from compress.models import MnistCNN
from quant import FakeQuantize, WeightFakeQuantize, quantizers
from quant.fake_quant import _LSQGrad
from quant.qat import QATObserver, QuantConvBn2d, activation_quantizers, freeze_observers
from quant.spec import qparams


def _data(n=6, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, 28, 28, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(n)]


def _model():
    torch.manual_seed(0)
    return MnistCNN(width=4).eval()


def _train(q, data, lr=1e-2):
    opt = torch.optim.SGD(q.parameters(), lr=lr)
    for x, y in data:
        loss = F.cross_entropy(q(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _scales(q):
    return {n: m.scale.clone() for n, m in quantizers(q)}


def test_returns_a_training_copy_with_fake_quant_on():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    q = compress.prepare_qat(model, torch.randn(2, 1, 28, 28))
    assert q.training and not model.training
    assert all(bool(m.quant_enabled) and bool(m.observe_enabled) for _, m in quantizers(q))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_straight_through_gradients_train_the_model():
    data = _data()
    q = compress.prepare_qat(_model(), data[0][0])
    x, y = data[0]
    F.cross_entropy(q(x), y).backward()
    assert all(p.grad is not None for n, p in q.named_parameters() if "log_scale" not in n)
    losses = []
    for _ in range(3):
        losses.append(F.cross_entropy(q(x), y).item())
        _train(q, [(x, y)], lr=5e-2)
    assert losses[-1] < losses[0]


def test_calibrated_start_is_the_ptq_model():
    data = _data()
    model = _model()
    ptq = compress.quantize(model, data, progress=False)
    q = compress.prepare_qat(model, data[0][0], calib_loader=data, progress=False).eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(q(x), ptq(x))
    assert all(isinstance(m.observer, QATObserver) for m in activation_quantizers(q))


def test_observers_freeze_after_the_configured_steps_and_bn_too():
    data = _data(n=5)
    q = compress.prepare_qat(_model(), data[0][0], freeze_observers_after=2, freeze_bn_after=3)
    history = []
    for x, y in data:
        _train(q, [(x, y)])
        history.append({n: s for n, s in _scales(q).items() if "weight" not in n})
    name = next(iter(history[0]))
    assert not torch.equal(history[0][name], history[1][name])  # moving average still moving
    assert all(torch.equal(history[1][n], history[k][n]) for n in history[1] for k in (2, 3, 4))
    convbn = [m for m in q.modules() if isinstance(m, QuantConvBn2d)]
    assert all(m.bn_frozen and int(m.bn_steps) == 3 for m in convbn)


def test_eval_is_deterministic_and_export_ready():
    data = _data()
    q = compress.prepare_qat(_model(), data[0][0], calib_loader=data[:2], progress=False)
    _train(q, data)  # the last optimizer step moved the weights after their last measurement
    q.eval()
    for m in q.modules():
        if isinstance(m, QuantConvBn2d):  # weight scales describe the current folded weight
            lo, hi = m.effective_weight().detach().flatten(1).aminmax(dim=1)
            assert torch.equal(m.weight_quant.scale, qparams(lo, hi, m.weight_quant.spec)[0])
    scales = _scales(q)
    x = torch.randn(4, 1, 28, 28) * 3
    first = q(x)
    assert torch.equal(first, q(x))
    assert all(torch.equal(scales[n], s) for n, s in _scales(q).items())


def test_manual_observer_freeze_and_state_dict_round_trip():
    data = _data()
    model = _model()
    q = compress.prepare_qat(model, data[0][0], freeze_bn_after=2)
    _train(q, data[:3])
    freeze_observers(q)
    _train(q, data[3:])
    fresh = compress.prepare_qat(model, data[0][0], freeze_bn_after=2)
    fresh.load_state_dict(q.state_dict())
    clone = copy.deepcopy(q)
    x = torch.randn(3, 1, 28, 28)
    ref = q.eval()(x)
    assert torch.equal(fresh.eval()(x), ref) and torch.equal(clone.eval()(x), ref)
    assert all(m.observer.frozen for m in activation_quantizers(fresh))


def test_lsq_gradient_matches_the_paper():
    x = torch.tensor([0.26, -0.1, 5.0, -3.0], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    y = _LSQGrad.apply(x, s, torch.tensor(0.0), -4, 3)  # codes: 0.52→1, -0.2→0, 10→3 (clip), -6→-4 (clip)
    assert torch.equal(y.detach(), torch.tensor([0.5, 0.0, 1.5, -2.0]))
    y.backward(torch.ones(4))
    g = 1 / (4 * 3) ** 0.5
    expected = ((1 - 0.52) + (0 + 0.2) + 3 + (-4)) * g
    assert torch.isclose(s.grad, torch.tensor(expected))
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize("calibrated", [True, False])
def test_lsq_scales_initialise_then_learn_and_eval_mirrors_them(calibrated):
    data = _data()
    q = compress.prepare_qat(_model(), data[0][0], learnable_scales=True, progress=False,
                             calib_loader=data[:2] if calibrated else None)
    acts = list(activation_quantizers(q))
    assert all(m.learnable for m in acts)
    _train(q, data[:1], lr=0.0)  # initialises (if needed) without moving anything
    initial = {m.name: float(m.log_scale.exp()) for m in acts}
    assert all(not m.observe_enabled for m in acts) and all(v != 1.0 for v in initial.values())
    _train(q, data[1:], lr=1e-2)
    moved = [m for m in acts if float(m.log_scale.exp()) != initial[m.name]]
    assert moved, "LSQ scales received no gradient"
    q.eval()
    assert all(torch.equal(m.scale, m.log_scale.detach().exp()) for m in acts)


@pytest.mark.parametrize("kwargs, match", [
    (dict(freeze_observers_after=0), "calib_loader"),
    (dict(freeze_bn_after=-1), "freeze_bn_after"),
    (dict(method="nope"), "unknown calibration method"),
    (dict(averaging_constant=0.0), "averaging_constant"),
])
def test_bad_arguments_raise_compress_errors(kwargs, match):
    with pytest.raises(compress.QuantizationError, match=match):
        compress.prepare_qat(_model(), torch.randn(2, 1, 28, 28), **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda():
    data = [(x.cuda(), y.cuda()) for x, y in _data()]
    q = compress.prepare_qat(_model().cuda(), data[0][0], calib_loader=data[:2], progress=False)
    _train(q, data, lr=1e-2)
    q.eval()
    assert all(m.scale.is_cuda for m in q.modules() if isinstance(m, FakeQuantize))
    assert q(data[0][0]).is_cuda
    assert not any(isinstance(m, WeightFakeQuantize) and not m.scale.is_cuda for m in q.modules())
