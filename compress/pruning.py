"""The pruning arrow of the flow: ``compress.prune`` and ``compress.sensitivity_analysis``.

Thin wrappers over prune/: they add nothing but the translation of ``PruneError``
into ``compress.PruningError``, so the lower package stays importable on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

import prune as _prune
from compress.errors import translate_errors
from prune.schedules import FineTune

SensitivityReport = _prune.SensitivityReport
SparsityReport = _prune.SparsityReport
ChannelGroup = _prune.ChannelGroup


@translate_errors
def prune(
    model: nn.Module,
    *,
    amount: float,
    structured: bool = False,
    importance: str = "l1",
    scope: str = "global",
    example_inputs: torch.Tensor | tuple | None = None,
    protect: Iterable[str | nn.Module] = (),
    schedule: str = "oneshot",
    steps: int = 1,
    fine_tune: FineTune | None = None,
    permanent: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """Prune ``model``; returns the pruned model (a copy unless ``inplace=True``).

    - ``structured=False``: magnitude masks so that ``amount`` of Conv/Linear weights are
      zero (``importance`` l1/l2/taylor, ``scope`` global or per layer); ``permanent=True``
      folds the masks into plain weights.
    - ``structured=True``: physically removes ``amount`` of the prunable output channels,
      coupled channels (residual adds, concats, depthwise convs, BatchNorm, a Linear after
      flatten) together; needs ``example_inputs``. ``importance`` l1/l2/taylor/bn_gamma.
    - ``protect``: names (or modules) left exactly as they are, e.g. ``["fc"]``.
    - ``schedule``: "oneshot", "agp" or "iterative" over ``steps`` steps, calling
      ``fine_tune(model, step)`` after each.

    Raises ``compress.PruningError`` naming the bad argument, layer or group.
    """
    return _prune.prune_model(
        model,
        amount=amount,
        structured=structured,
        importance=importance,
        scope=scope,
        example_inputs=example_inputs,
        protect=protect,
        schedule=schedule,
        steps=steps,
        fine_tune=fine_tune,
        permanent=permanent,
        inplace=inplace,
    )


@translate_errors
def sensitivity_analysis(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    *,
    amounts: Sequence[float] = (0.25, 0.5, 0.75),
    structured: bool = False,
    example_inputs: torch.Tensor | tuple | None = None,
    importance: str = "l1",
    protect: Iterable[str | nn.Module] = (),
) -> SensitivityReport:
    """Metric with each layer (or coupled group) alone pruned by each amount; ``.to_markdown()``."""
    return _prune.sensitivity_analysis(
        model,
        evaluate,
        amounts=amounts,
        structured=structured,
        example_inputs=example_inputs,
        importance=importance,
        protect=protect,
    )


make_permanent = translate_errors(_prune.make_permanent)
sparsity_report = translate_errors(_prune.sparsity_report)
dependency_groups = translate_errors(_prune.dependency_groups)
count_params = _prune.count_params
count_macs = translate_errors(_prune.count_macs)
recalibrate_batchnorm = _prune.recalibrate_batchnorm
