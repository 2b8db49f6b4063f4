"""Decoupled knowledge distillation (Zhao et al., CVPR 2022)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.validation import check_logits, check_range, check_target


def dkd_terms(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-sample (TCKD, NCKD), each of shape (N,).

    With p = softmax(z/T) and g the target class:

    * TCKD = KL(b_t ‖ b_s), b = [p_g, 1 − p_g]: the binary "how sure about the label" part;
    * NCKD = KL(p̂_t ‖ p̂_s), p̂ = softmax over the non-target logits: the "dark knowledge"
      among wrong classes.

    They split classic KD exactly: KL(p_t ‖ p_s) = TCKD + (1 − p_{t,g})·NCKD.
    Everything is computed in log space (non-target mass via logsumexp), so confident
    teachers with p_g → 1 give no 0·log 0 NaNs.
    """
    n, c = student_logits.shape
    mask = F.one_hot(target, c).bool()
    s, t = student_logits / temperature, teacher_logits / temperature
    s_lse, t_lse = s.logsumexp(1), t.logsumexp(1)
    s_other, t_other = s[~mask].view(n, c - 1), t[~mask].view(n, c - 1)
    # log-probabilities of the binary split [target, not target]
    log_b_s = torch.stack([s[mask] - s_lse, s_other.logsumexp(1) - s_lse], dim=1)
    log_b_t = torch.stack([t[mask] - t_lse, t_other.logsumexp(1) - t_lse], dim=1)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(1)
    log_q_s, log_q_t = F.log_softmax(s_other, 1), F.log_softmax(t_other, 1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(1)
    return tckd, nckd


class DKDLoss(nn.Module):
    r"""DKD: re-weights the two halves of KD that classic KD couples together.

    .. math::
        L = w_{ce}\,\mathrm{CE}(z_s, y) + T^2\,\big(\alpha\,\mathrm{TCKD} + \beta\,\mathrm{NCKD}\big)

    averaged over the batch (see :func:`dkd_terms`). Classic KD weights NCKD by
    1 − p_{t,g}, which is small exactly when the teacher is confident, i.e. on the
    easy samples whose wrong-class structure is most informative; DKD gives NCKD its
    own weight β instead. Defaults are the paper's (α=1, β=8, T=4). The paper's linear
    warm-up of the distillation term is left to the training schedule.
    Logits must be (N, C): the target class has to be known per row.
    """

    def __init__(
        self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0, ce_weight: float = 1.0
    ) -> None:
        super().__init__()
        check_range("DKDLoss", "temperature", temperature, 0.0, math.inf, low_open=True)
        for name, value in (("alpha", alpha), ("beta", beta), ("ce_weight", ce_weight)):
            check_range("DKDLoss", name, value, 0.0, math.inf)
        self.temperature, self.alpha, self.beta, self.ce_weight = (
            float(temperature),
            float(alpha),
            float(beta),
            float(ce_weight),
        )

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        check_logits("DKDLoss", student_logits, teacher_logits)
        if student_logits.dim() != 2 or student_logits.shape[1] < 2:
            raise DistillError(
                f"DKDLoss: logits must be (N, C) with C ≥ 2, got {tuple(student_logits.shape)}"
            )
        target = check_target("DKDLoss", student_logits, target)
        t = self.temperature
        tckd, nckd = dkd_terms(student_logits, teacher_logits, target, t)
        kd = (t * t) * (self.alpha * tckd + self.beta * nckd).mean()
        if self.ce_weight == 0.0:
            return kd
        return self.ce_weight * F.cross_entropy(student_logits, target) + kd

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, alpha={self.alpha}, beta={self.beta}, "
            f"ce_weight={self.ce_weight}"
        )
