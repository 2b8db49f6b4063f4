"""Relational knowledge distillation (Park et al., CVPR 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.validation import check_batch, check_range

_EPS = 1e-12


def distance_potential(embedding: torch.Tensor) -> torch.Tensor:
    """Pairwise distances ‖e_i − e_j‖ for i < j, divided by their mean: shape (N(N−1)/2,).

    Dividing by the mean makes the structure scale-free, so a student with a different
    embedding width or magnitude matches only the teacher's *relative* geometry. Uses
    the Gram form (O(N²) memory, not O(N²·D)); the clamp keeps sqrt's gradient finite
    for duplicate samples.
    """
    sq = embedding.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * embedding @ embedding.T).clamp_min(_EPS)
    i, j = torch.triu_indices(len(embedding), len(embedding), offset=1, device=embedding.device)
    d = d2[i, j].sqrt()
    return d / d.mean().clamp_min(_EPS)


def angle_potential(embedding: torch.Tensor) -> torch.Tensor:
    """cos ∠(e_i, e_j, e_k) for every triplet, vertex at e_j: shape (N³,).

    Memory is O(N²·D), so tap an embedding (pooled features, logits), not a full conv map.
    """
    diff = F.normalize(embedding[None, :, :] - embedding[:, None, :], p=2, dim=2)  # [j, i] = e_i − e_j
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


class RKDLoss(nn.Module):
    r"""RKD: the student matches the teacher's distance and angle structure over the batch.

    .. math::
        L = w_d\,\mathrm{Huber}\big(\psi_D(S), \psi_D(T)\big)
          + w_a\,\mathrm{Huber}\big(\psi_A(S), \psi_A(T)\big)

    with ψ_D the mean-normalised pairwise distances and ψ_A the cosines of all triplet
    angles (:func:`distance_potential`, :func:`angle_potential`). Both are invariant to
    rotation, translation and scale of either embedding and compare embeddings of
    different widths without an adapter, which suits pruned students. Defaults are
    the paper's (w_d = 25, w_a = 50). Features are flattened to (N, D).
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        check_range("RKDLoss", "distance_weight", distance_weight, 0.0, float("inf"))
        check_range("RKDLoss", "angle_weight", angle_weight, 0.0, float("inf"))
        self.distance_weight, self.angle_weight = float(distance_weight), float(angle_weight)

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        check_batch("RKDLoss", student_feature, teacher_feature)
        n = student_feature.shape[0]
        need = 3 if self.angle_weight > 0 else 2
        if n < need:
            raise DistillError(f"RKDLoss: relations need a batch of at least {need} samples, got {n}")
        s = student_feature.flatten(1)
        t = teacher_feature.detach().flatten(1)
        loss = s.new_zeros(())
        if self.distance_weight > 0:
            loss = loss + self.distance_weight * F.smooth_l1_loss(
                distance_potential(s), distance_potential(t)
            )
        if self.angle_weight > 0:
            loss = loss + self.angle_weight * F.smooth_l1_loss(angle_potential(s), angle_potential(t))
        return loss

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"
