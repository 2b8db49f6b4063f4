"""Each distillation loss against a hand computation, plus its shape and argument errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from distill import (
    AttentionTransferLoss,
    ChannelAdapter,
    DistillError,
    DKDLoss,
    HintLoss,
    KDLoss,
    RKDLoss,
    angle_potential,
    attention_map,
    distance_potential,
    dkd_terms,
)


def logits(n: int = 6, c: int = 5, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return scale * torch.randn(n, c), scale * torch.randn(n, c), torch.randint(0, c, (n,))


def hand_kl(p_t: torch.Tensor, p_s: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(p_t ‖ p_s) written out in probabilities."""
    return (p_t * (p_t.log() - p_s.log())).sum(1).mean()


# --- KD -------------------------------------------------------------------------------------------


def test_kd_at_t1_alpha1_is_the_kl_divergence():
    s, t, y = logits()
    expected = hand_kl(t.softmax(1), s.softmax(1))
    torch.testing.assert_close(KDLoss(temperature=1.0, alpha=1.0)(s, t, y), expected)
    torch.testing.assert_close(KDLoss(temperature=1.0, alpha=1.0)(s, t, None), expected)


def test_kd_mixes_t_squared_soft_term_with_cross_entropy():
    s, t, y = logits()
    temp, alpha = 3.0, 0.7
    soft = hand_kl((t / temp).softmax(1), (s / temp).softmax(1)) * temp**2
    expected = alpha * soft + (1 - alpha) * F.cross_entropy(s, y)
    torch.testing.assert_close(KDLoss(temp, alpha)(s, t, y), expected)
    torch.testing.assert_close(KDLoss(temp, 0.0)(s, t, y), F.cross_entropy(s, y))


def test_kd_gradient_is_t_times_probability_gap():
    """d/dz_s of T²·KL at temperature T is T·(σ(z_s/T) − σ(z_t/T)) / N."""
    s, t, y = logits()
    temp = 5.0
    s.requires_grad_(True)
    KDLoss(temp, 1.0)(s, t, y).backward()
    expected = temp * ((s.detach() / temp).softmax(1) - (t / temp).softmax(1)) / len(s)
    torch.testing.assert_close(s.grad, expected)


def test_t_squared_keeps_the_soft_gradient_magnitude_independent_of_t():
    s, t, y = logits(n=32, c=10)
    norms = {}
    for temp in (8.0, 16.0, 32.0):
        z = s.clone().requires_grad_(True)
        KDLoss(temp, 1.0)(z, t, y).backward()
        norms[temp] = z.grad.norm().item()
    # Without T² the gradient would halve with each doubling of T; with it, it converges.
    assert norms[16.0] / norms[8.0] == pytest.approx(1.0, abs=0.1)
    assert norms[32.0] / norms[16.0] == pytest.approx(1.0, abs=0.03)


def test_kd_shape_and_argument_errors():
    s, t, y = logits()
    with pytest.raises(DistillError, match=r"student logits \(6, 5\) and teacher logits \(6, 4\)"):
        KDLoss()(s, t[:, :4], y)
    with pytest.raises(DistillError, match=r"target shape \(5,\)"):
        KDLoss()(s, t, y[:5])
    with pytest.raises(DistillError, match="target is None"):
        KDLoss(alpha=0.5)(s, t, None)
    with pytest.raises(DistillError, match="integer class indices"):
        KDLoss(alpha=0.5)(s, t, y.float())
    with pytest.raises(DistillError, match="temperature"):
        KDLoss(temperature=0.0)
    with pytest.raises(DistillError, match="alpha"):
        KDLoss(alpha=1.5)


def test_kd_accepts_dense_logits():
    """Segmentation-style (N, C, H, W) logits: each position is one sample."""
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    flat = KDLoss(2.0, 1.0)(s.permute(0, 2, 3, 1).reshape(-1, 3), t.permute(0, 2, 3, 1).reshape(-1, 3))
    torch.testing.assert_close(KDLoss(2.0, 1.0)(s, t), flat)


# --- DKD ------------------------------------------------------------------------------------------


def test_dkd_terms_against_probabilities():
    s, t, y = logits(n=4, c=6)
    temp = 2.0
    tckd, nckd = dkd_terms(s, t, y, temp)
    for i in range(len(s)):
        p_s, p_t = (s[i] / temp).softmax(0), (t[i] / temp).softmax(0)
        g = y[i]
        b_s = torch.stack([p_s[g], 1 - p_s[g]])
        b_t = torch.stack([p_t[g], 1 - p_t[g]])
        keep = torch.arange(6) != g
        q_s, q_t = p_s[keep] / p_s[keep].sum(), p_t[keep] / p_t[keep].sum()
        torch.testing.assert_close(tckd[i], (b_t * (b_t / b_s).log()).sum())
        torch.testing.assert_close(nckd[i], (q_t * (q_t / q_s).log()).sum())


def test_dkd_decomposes_kd_exactly():
    """KL(p_t ‖ p_s) = TCKD + (1 − p_t[target])·NCKD, per sample (Zhao et al., eq. 7)."""
    s, t, y = logits(n=8, c=10)
    temp = 3.0
    tckd, nckd = dkd_terms(s, t, y, temp)
    p_t = (t / temp).softmax(1)
    kl = (p_t * (p_t.log() - (s / temp).log_softmax(1))).sum(1)
    torch.testing.assert_close(kl, tckd + (1 - p_t.gather(1, y[:, None]).squeeze(1)) * nckd)


def test_dkd_loss_combines_terms_and_survives_a_confident_teacher():
    s, t, y = logits()
    temp, alpha, beta = 4.0, 1.0, 8.0
    tckd, nckd = dkd_terms(s, t, y, temp)
    expected = F.cross_entropy(s, y) + temp**2 * (alpha * tckd + beta * nckd).mean()
    torch.testing.assert_close(DKDLoss(temp, alpha, beta)(s, t, y), expected)
    confident = F.one_hot(y, 5).float() * 200.0  # p_target = 1 in float32
    z = s.clone().requires_grad_(True)
    DKDLoss()(z, confident, y).backward()
    assert torch.isfinite(z.grad).all()


def test_dkd_errors():
    s, t, y = logits()
    with pytest.raises(DistillError, match=r"must be \(N, C\)"):
        DKDLoss()(s[:, :, None], t[:, :, None], y[:, None])
    with pytest.raises(DistillError, match="target is None"):
        DKDLoss()(s, t, None)
    with pytest.raises(DistillError, match="beta"):
        DKDLoss(beta=-1.0)


# --- FitNets hints --------------------------------------------------------------------------------


def test_hint_without_adapter_is_mse():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(HintLoss(weight=2.0)(s, t), 2.0 * ((s - t) ** 2).mean())
    assert HintLoss(4, 4).adapter is None  # same width: nothing to learn


def test_adapter_is_a_1x1_conv_on_maps_and_a_linear_on_vectors():
    adapter = ChannelAdapter(3, 5)
    w, b = adapter.linear.weight, adapter.linear.bias
    x4 = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(adapter(x4), F.conv2d(x4, w[:, :, None, None], b))
    x2 = torch.randn(2, 3)
    torch.testing.assert_close(adapter(x2), F.linear(x2, w, b))


def test_hint_adapter_maps_student_channels_and_learns():
    loss = HintLoss(student_channels=4, teacher_channels=8)
    s, t = torch.randn(2, 4, 3, 3, requires_grad=True), torch.randn(2, 8, 3, 3)
    expected = ((loss.adapter(s) - t) ** 2).mean()
    value = loss(s, t)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert loss.adapter.linear.weight.grad is not None and s.grad is not None


def test_hint_errors_say_what_to_do():
    with pytest.raises(DistillError, match="student_channels=4, teacher_channels=8"):
        HintLoss()(torch.randn(2, 4, 3, 3), torch.randn(2, 8, 3, 3))
    with pytest.raises(DistillError, match="same spatial size"):
        HintLoss()(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 6, 6))
    with pytest.raises(DistillError, match="adapter maps 4 -> 8 channels"):
        HintLoss(4, 8)(torch.randn(2, 5, 3, 3), torch.randn(2, 8, 3, 3))
    with pytest.raises(DistillError, match="batch dimension"):
        HintLoss()(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(DistillError, match="or neither"):
        HintLoss(student_channels=4)


# --- attention transfer ---------------------------------------------------------------------------


def test_attention_map_by_hand():
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    q = torch.tensor([(1 + 9) / 2, (4 + 0) / 2])  # mean over channels of a²
    torch.testing.assert_close(attention_map(a), (q / q.norm())[None])
    t = torch.tensor([[[[0.0, 1.0]]]])  # attention (0, 1)
    expected = 0.5 * 1000.0 * ((q / q.norm() - torch.tensor([0.0, 1.0])) ** 2).mean()
    torch.testing.assert_close(AttentionTransferLoss()(a, t), expected)


def test_attention_transfer_ignores_feature_scale_and_channel_count():
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 16, 5, 5)
    loss = AttentionTransferLoss()
    base = loss(s, t)
    torch.testing.assert_close(loss(7.5 * s, t), base)
    torch.testing.assert_close(loss(s, 0.01 * t), base)
    torch.testing.assert_close(loss(s.repeat(1, 3, 1, 1), t), base)  # 12 channels, same map
    torch.testing.assert_close(loss(s, s), torch.tensor(0.0))


def test_attention_transfer_errors():
    with pytest.raises(DistillError, match="spatial feature maps"):
        AttentionTransferLoss()(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(DistillError, match="spatial size"):
        AttentionTransferLoss()(torch.randn(2, 4, 4, 4), torch.randn(2, 4, 8, 8))


# --- relational KD --------------------------------------------------------------------------------


def test_distance_and_angle_potentials_by_hand():
    line = torch.tensor([[0.0], [1.0], [3.0]])  # pairs (0,1)=1, (0,2)=3, (1,2)=2; mean 2
    torch.testing.assert_close(distance_potential(line), torch.tensor([0.5, 1.5, 1.0]))
    tri = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # right angle at point 1
    cos = angle_potential(tri).view(3, 3, 3)  # [j, i, k]: vertex j
    assert cos[1, 0, 2].item() == pytest.approx(0.0, abs=1e-6)
    assert cos[0, 1, 2].item() == pytest.approx(math.cos(math.pi / 4), abs=1e-6)


def test_rkd_is_zero_under_rotation_scale_and_translation_and_allows_other_widths():
    s = torch.randn(8, 6)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    loss = RKDLoss()
    assert loss(s, 3.0 * s @ q + 1.5).item() == pytest.approx(0.0, abs=1e-5)
    wide = torch.cat([s, torch.zeros(8, 10)], dim=1)  # same geometry, 16 dims
    assert loss(s, wide).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(s, torch.randn(8, 16)).item() > 0.1


def test_rkd_errors_and_finite_gradient_on_duplicates():
    with pytest.raises(DistillError, match="at least 3 samples"):
        RKDLoss()(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(DistillError, match="batch dimension"):
        RKDLoss()(torch.randn(4, 4), torch.randn(5, 4))
    s = torch.randn(4, 3).repeat(2, 1).requires_grad_(True)  # every sample twice
    RKDLoss()(s, torch.randn(8, 5)).backward()
    assert torch.isfinite(s.grad).all()
