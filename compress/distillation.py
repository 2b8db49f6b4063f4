"""Facade: train a student from a teacher (the "distill" arrow of DESIGN.md §1)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

from compress.errors import translate_errors
from compress.models import train_classifier
from distill import Distiller, DistillError, DKDLoss, KDLoss

# Named logit losses with the defaults of their papers; pass a module for other settings.
LOGIT_LOSSES = {"kd": KDLoss, "dkd": DKDLoss}


def _logit_loss(loss: str | nn.Module) -> nn.Module:
    if isinstance(loss, nn.Module):
        return loss
    if loss not in LOGIT_LOSSES:
        raise DistillError(
            f"unknown distillation loss {loss!r}; choose one of {sorted(LOGIT_LOSSES)} or pass a module"
        )
    return LOGIT_LOSSES[loss]()


@translate_errors
def distill(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable,
    *,
    loss: str | nn.Module = "kd",
    feature_losses: Mapping[tuple[str, str], nn.Module] | None = None,
    epochs: int = 3,
    lr: float = 3e-3,
    progress: bool = False,
) -> nn.Module:
    """Train ``student`` in place on ``loader`` to match ``teacher``; returns it in eval mode.

    ``loss`` is ``"kd"``, ``"dkd"`` or a logit-loss module (see :class:`distill.Distiller`);
    ``feature_losses`` maps ``(teacher_module, student_module)`` names to feature losses.
    The loop is the shared Adam + one-cycle one (``compress.models.train_classifier``),
    run over the student and the losses' adapters together. The student may be any
    module, a QAT model from ``compress.prepare_qat`` or a pruned one included; the
    teacher is left in its original mode and without hooks.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise DistillError(f"epochs must be a positive integer, got {epochs!r}")
    if not lr > 0:
        raise DistillError(f"lr must be positive, got {lr!r}")
    with Distiller(
        teacher, student, logit_loss=_logit_loss(loss), feature_losses=feature_losses
    ) as distiller:
        # One module over student + adapters, so the shared loop's optimizer trains both.
        trained = nn.ModuleDict({"student": student, "losses": distiller.losses})
        train_classifier(
            trained, loader, epochs, lr, loss_fn=lambda _model, x, y: distiller(x, y).loss, progress=progress
        )
    return student.eval()
