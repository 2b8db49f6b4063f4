"""Attention transfer (Zagoruyko & Komodakis, ICLR 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.validation import check_range, check_spatial


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention Q = mean_c |A_c|^p, flattened and L2-normalised per sample: (N, H·W).

    The channel mean makes it independent of the channel count (so a narrow student
    and a wide teacher compare without an adapter), and the normalisation makes it
    independent of the feature's scale: only *where* the network looks is transferred.
    """
    return F.normalize(feature.abs().pow(p).mean(1).flatten(1), dim=1)


class AttentionTransferLoss(nn.Module):
    r"""Activation-based attention transfer.

    .. math:: L = \frac{\beta}{2}\,\mathrm{mean}_{n,j}\big(\hat Q_s - \hat Q_t\big)^2,
              \quad \hat Q = Q / \|Q\|_2,\; Q = \mathrm{vec}\big(\mathrm{mean}_c |A_c|^p\big)

    as in the authors' code (β = 1000, p = 2). Student and teacher maps must have the
    same spatial size; channel counts may differ.
    """

    def __init__(self, beta: float = 1000.0, p: float = 2.0) -> None:
        super().__init__()
        check_range("AttentionTransferLoss", "beta", beta, 0.0, float("inf"))
        check_range("AttentionTransferLoss", "p", p, 0.0, float("inf"), low_open=True)
        self.beta, self.p = float(beta), float(p)

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        if student_feature.dim() < 3:
            raise DistillError(
                "AttentionTransferLoss: needs spatial feature maps (N, C, H, ...), "
                f"got {tuple(student_feature.shape)}"
            )
        check_spatial("AttentionTransferLoss", student_feature, teacher_feature)
        q_s = attention_map(student_feature, self.p)
        q_t = attention_map(teacher_feature.detach(), self.p)
        return 0.5 * self.beta * (q_s - q_t).pow(2).mean()

    def extra_repr(self) -> str:
        return f"beta={self.beta}, p={self.p}"
