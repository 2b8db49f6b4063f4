"""Shape checks shared by the losses, so every mismatch fails with the same clear wording.

A wrong shape inside a loss otherwise surfaces as a broadcasting error deep in torch
(or, worse, silently broadcasts); these checks name the loss and both shapes instead.
"""

from __future__ import annotations

import torch

from distill.errors import DistillError


def check_logits(loss: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Student and teacher logits must be (N, C, ...) tensors of the same shape."""
    if student.dim() < 2:
        raise DistillError(
            f"{loss}: logits must be (N, C) or (N, C, ...), got student shape {tuple(student.shape)}"
        )
    if student.shape != teacher.shape:
        raise DistillError(
            f"{loss}: student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} "
            "differ; both models must predict the same classes for the same batch"
        )


def check_target(loss: str, logits: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Class-index targets: shape (N, ...) matching the logits without the class dim."""
    if target is None:
        raise DistillError(f"{loss}: this configuration uses the labels, but target is None")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise DistillError(
            f"{loss}: target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}; "
            f"expected class indices of shape {expected}"
        )
    if target.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise DistillError(f"{loss}: target must hold integer class indices, got dtype {target.dtype}")
    return target.long()


def check_batch(loss: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Features compared sample by sample need the same batch size."""
    if student.dim() < 1 or teacher.dim() < 1 or student.shape[0] != teacher.shape[0]:
        raise DistillError(
            f"{loss}: student feature {tuple(student.shape)} and teacher feature {tuple(teacher.shape)} "
            "must share the batch dimension"
        )


def check_spatial(loss: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """Feature maps compared position by position need the same spatial size."""
    check_batch(loss, student, teacher)
    if student.dim() != teacher.dim() or student.shape[2:] != teacher.shape[2:]:
        raise DistillError(
            f"{loss}: student feature {tuple(student.shape)} and teacher feature {tuple(teacher.shape)} "
            "differ in rank or spatial size; tap layers at the same resolution"
        )


def check_range(
    loss: str, name: str, value: float, low: float, high: float, *, low_open: bool = False
) -> None:
    """Hyper-parameter in [low, high] (or (low, high] when ``low_open``)."""
    ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise DistillError(f"{loss}: {name} must be in {bracket}{low}, {high}], got {value}")
