"""FitNets feature hints (Romero et al., ICLR 2015) and the learned adapter they need."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.validation import check_batch, check_range


class ChannelAdapter(nn.Module):
    """A learned linear map over the channel dim 1: a 1x1 conv on (N, C, H, W), a Linear on (N, C).

    One class for every rank, so a hint between conv maps, sequence features or pooled
    vectors needs no choice of adapter type; it is the FitNets "regressor".
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)


class HintLoss(nn.Module):
    r"""FitNets hint: the student's feature, mapped by a learned adapter r, regresses the teacher's.

    .. math:: L = w \cdot \mathrm{mean}\big((r(F_s) - F_t)^2\big)

    The adapter exists only when ``student_channels != teacher_channels`` (a narrow or
    pruned student tapping the same layer as a wide teacher); its parameters belong
    to this module, so an optimizer over the Distiller's trainable parameters learns
    it with the student. Spatial sizes must already agree: tap layers at the same
    resolution rather than let an interpolation invent a correspondence.
    """

    def __init__(
        self, student_channels: int | None = None, teacher_channels: int | None = None, weight: float = 1.0
    ) -> None:
        super().__init__()
        if (student_channels is None) != (teacher_channels is None):
            raise DistillError("HintLoss: give both student_channels and teacher_channels, or neither")
        check_range("HintLoss", "weight", weight, 0.0, float("inf"))
        self.weight = float(weight)
        self.adapter: ChannelAdapter | None = None
        if student_channels is not None and student_channels != teacher_channels:
            self.adapter = ChannelAdapter(student_channels, teacher_channels)  # type: ignore[arg-type]

    def forward(self, student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
        check_batch("HintLoss", student_feature, teacher_feature)
        if student_feature.dim() < 2:
            raise DistillError(f"HintLoss: features must be (N, C, ...), got {tuple(student_feature.shape)}")
        s = student_feature
        if self.adapter is not None:
            lin = self.adapter.linear
            if s.shape[1] != lin.in_features or teacher_feature.shape[1] != lin.out_features:
                raise DistillError(
                    f"HintLoss: adapter maps {lin.in_features} -> {lin.out_features} channels, but the "
                    f"student feature is {tuple(s.shape)} and the teacher feature "
                    f"{tuple(teacher_feature.shape)}"
                )
            s = self.adapter(s)
        if s.shape != teacher_feature.shape:
            hint = (
                f"; pass student_channels={s.shape[1]}, teacher_channels={teacher_feature.shape[1]} "
                "to learn an adapter"
                if s.shape[2:] == teacher_feature.shape[2:] and self.adapter is None
                else "; tap layers with the same spatial size"
            )
            raise DistillError(
                f"HintLoss: student feature {tuple(student_feature.shape)} does not match teacher feature "
                f"{tuple(teacher_feature.shape)}{hint}"
            )
        return self.weight * F.mse_loss(s, teacher_feature.detach())

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
