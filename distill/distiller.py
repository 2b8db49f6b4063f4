"""The Distiller: one call computes a student's distillation loss for a batch.

It owns no training loop on purpose: the caller's loop (plain, QAT with observer and
BN freezing, pruning schedules, DDP) stays in charge, and the Distiller slots in
where the loss is computed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import DistillError
from distill.taps import FeatureTaps

FeaturePair = tuple[str, str]  # (teacher module name, student module name)


@dataclass
class DistillOutput:
    """The loss to backpropagate, its named parts (for logging) and both models' logits."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    student_logits: torch.Tensor
    teacher_logits: torch.Tensor


class Distiller:
    """Combines a logit loss with feature losses between tapped teacher and student modules.

    ``logit_loss(student_logits, teacher_logits, target)`` is e.g. :class:`distill.KDLoss`;
    when None, the logit term is plain cross-entropy on the labels, so feature-only
    distillation still learns the task. ``feature_losses`` maps a pair of module names
    ``(teacher_name, student_name)`` (as in ``named_modules()``) to a loss called as
    ``loss(student_feature, teacher_feature)``.

    The teacher runs under ``torch.no_grad()`` in eval mode on every call (its BN
    statistics and dropout stay frozen even if a loop calls ``.train()`` on it); its
    original mode is restored by :meth:`remove`. The student is called as is, so its
    mode is the caller's. Build the Distiller on the model you will train: taps on a
    model that is later traced or copied (e.g. by ``compress.prepare_qat``) do not
    follow it, so build after preparation, with the prepared model's module names.
    Loss modules with parameters (adapters) are moved to the student's device; pass
    :meth:`trainable_parameters` to the optimizer.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        logit_loss: nn.Module | None = None,
        feature_losses: Mapping[FeaturePair, nn.Module] | None = None,
    ) -> None:
        if teacher is student:
            raise DistillError("teacher and student are the same module; distil into a separate copy")
        feature_losses = dict(feature_losses or {})
        for pair in feature_losses:
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(n, str) for n in pair)):
                raise DistillError(
                    "feature_losses keys must be (teacher_module_name, student_module_name) pairs, "
                    f"got {pair!r}"
                )
        self.teacher, self.student = teacher, student
        self.logit_loss = logit_loss
        self.pairs: list[FeaturePair] = list(feature_losses)
        self.feature_losses = nn.ModuleList(feature_losses.values())
        self._teacher_taps = FeatureTaps(teacher, [t for t, _ in self.pairs], role="teacher")
        try:
            self._student_taps = FeatureTaps(student, [s for _, s in self.pairs], role="student")
        except DistillError:
            self._teacher_taps.remove()
            raise
        self._teacher_was_training = teacher.training
        teacher.eval()
        device = next(iter(student.parameters()), None)
        if device is not None:
            self.losses.to(device.device)

    @property
    def losses(self) -> nn.ModuleList:
        """Every loss module (logit loss first when given): for ``.to()``, ``state_dict()``."""
        return nn.ModuleList(
            [*([self.logit_loss] if self.logit_loss is not None else []), *self.feature_losses]
        )

    def loss_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the losses themselves, e.g. FitNets adapters."""
        return self.losses.parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student parameters that require grad, plus the losses' parameters: what the optimizer needs."""
        return [p for p in self.student.parameters() if p.requires_grad] + list(self.loss_parameters())

    def __call__(self, inputs: torch.Tensor | tuple, target: torch.Tensor | None = None) -> DistillOutput:
        """Run both models on ``inputs`` (a tensor, or a tuple of positional args); combine the losses."""
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        self.teacher.eval()
        with torch.no_grad(), self._teacher_taps.recording() as teacher_features:
            teacher_logits = self.teacher(*args)
        with self._student_taps.recording() as student_features:
            student_logits = self.student(*args)
        for role, out in (("teacher", teacher_logits), ("student", student_logits)):
            if not isinstance(out, torch.Tensor):
                raise DistillError(
                    f"the {role} returned {type(out).__name__}; the Distiller needs logits as a tensor"
                )
        parts: dict[str, torch.Tensor] = {}
        if self.logit_loss is not None:
            parts[type(self.logit_loss).__name__] = self.logit_loss(student_logits, teacher_logits, target)
        else:
            if target is None:
                raise DistillError("without a logit_loss the Distiller trains on labels; target is None")
            parts["cross_entropy"] = F.cross_entropy(student_logits, target)
        for (t_name, s_name), loss in zip(self.pairs, self.feature_losses, strict=True):
            parts[f"{type(loss).__name__}[{t_name} -> {s_name}]"] = loss(
                student_features[s_name], teacher_features[t_name]
            )
        total = torch.stack(list(parts.values())).sum()
        return DistillOutput(total, parts, student_logits, teacher_logits)

    def remove(self) -> None:
        """Remove every hook and restore the teacher's original train/eval mode. Idempotent."""
        if self._teacher_taps.active or self._student_taps.active:
            self.teacher.train(self._teacher_was_training)
        self._teacher_taps.remove()
        self._student_taps.remove()

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
