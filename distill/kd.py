"""Classic knowledge distillation (Hinton, Vinyals & Dean, 2015)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from distill.validation import check_logits, check_range, check_target


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample KL(p_T ‖ p_S) between softmax(z/T) distributions over the class dim 1.

    Returns shape (N, ...) so callers choose the reduction; spatial positions of dense
    (N, C, H, W) logits each count as one sample.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)


class KDLoss(nn.Module):
    r"""Hinton KD: soft teacher targets at temperature T mixed with the hard label loss.

    .. math::
        L = \alpha\,T^2\,\mathrm{KL}\big(\sigma(z_t/T)\,\|\,\sigma(z_s/T)\big)
            + (1-\alpha)\,\mathrm{CE}(z_s, y)

    averaged over the batch. Why T²: the gradient of the soft term w.r.t. ``z_s`` is
    ``T·(σ(z_s/T) − σ(z_t/T))``, which shrinks like 1/T for large T; scaling by T²
    keeps its magnitude independent of T, so changing T does not silently re-weight
    the soft term against the hard one. ``alpha = 1`` ignores the labels (``target``
    may then be None).
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        check_range("KDLoss", "temperature", temperature, 0.0, math.inf, low_open=True)
        check_range("KDLoss", "alpha", alpha, 0.0, 1.0)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_logits("KDLoss", student_logits, teacher_logits)
        t = self.temperature
        soft = soft_kl(student_logits, teacher_logits, t).mean() * (t * t)
        if self.alpha == 1.0:
            return soft
        target = check_target("KDLoss", student_logits, target)
        hard = F.cross_entropy(student_logits, target)
        return self.alpha * soft + (1.0 - self.alpha) * hard

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
