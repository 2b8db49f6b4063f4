"""The one pruning call: unstructured or structured, one-shot or gradual.

This is what ``compress.prune`` runs; it validates every argument up front so a bad
call fails before any weight changes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from prune.errors import PruneError
from prune.masks import UNSTRUCTURED_IMPORTANCES, detach_masked_weights, make_permanent, prune_weights
from prune.options import IMPORTANCES, SCOPES, check_amount, check_choice, resolve_protect
from prune.schedules import SCHEDULES, FineTune, run_schedule, sparsity_schedule, step_fraction
from prune.structured import prune_channels
from prune.tracing import as_input_tuple


def copy_model(model: nn.Module) -> nn.Module:
    """Deep copy that keeps parameter gradients (deepcopy drops them; Taylor scores need them)."""
    detach_masked_weights(model)
    clone = copy.deepcopy(model)
    for (_, src), (_, dst) in zip(model.named_parameters(), clone.named_parameters(), strict=True):
        if src.grad is not None:
            dst.grad = src.grad.detach().clone()
    return clone


def prune_model(
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
    """Prune ``model`` and return it (a copy unless ``inplace``).

    Unstructured: masks the smallest weights so that ``amount`` of Conv/Linear weights
    are zero; ``permanent=True`` folds the masks away at the end. Structured: removes
    ``amount`` of the prunable output channels physically (needs ``example_inputs``).
    ``schedule`` "agp" or "iterative" reaches ``amount`` in ``steps`` steps, calling
    ``fine_tune(model, step)`` after each; "oneshot" prunes once and then fine-tunes
    once if a callback is given.
    """
    check_amount(amount)
    check_choice(scope, SCOPES, "scope")
    check_choice(schedule, SCHEDULES, "schedule")
    check_choice(importance, IMPORTANCES if structured else UNSTRUCTURED_IMPORTANCES, "importance")
    if fine_tune is not None and not callable(fine_tune):
        raise PruneError(f"fine_tune must be callable as fine_tune(model, step), got {fine_tune!r}")
    protect = sorted(resolve_protect(model, protect))  # names survive the copy below; modules do not
    targets = sparsity_schedule(amount, steps, schedule)
    inputs = as_input_tuple(example_inputs, "structured pruning") if structured else ()
    if not inplace:
        model = copy_model(model)

    if structured:

        def prune_to(target: float, previous: float) -> None:
            prune_channels(
                model,
                step_fraction(target, previous),
                example_inputs=inputs,
                importance=importance,
                scope=scope,
                protect=protect,
            )

    else:

        def prune_to(target: float, previous: float) -> None:
            prune_weights(model, target, importance=importance, scope=scope, protect=protect)

    run_schedule(model, targets, prune_to, fine_tune)
    if permanent:
        make_permanent(model)
    return model
