"""One-shot and gradual pruning schedules, with fine-tuning between steps.

A schedule is the list of cumulative sparsities to reach, one per step. Gradual
pruning lets the network recover between cuts, so the same final sparsity costs less
accuracy than one cut of the same size:

- ``agp``: Zhu & Gupta's automated gradual pruning, s_t = s_f·(1 − (1 − t/n)³); it
  cuts hard while the network is redundant and gently near the end;
- ``iterative``: the same fraction of what is left at every step,
  s_t = 1 − (1 − s_f)^(t/n) (the classic prune / retrain loop).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from prune.errors import PruneError

SCHEDULES = ("oneshot", "agp", "iterative")

FineTune = Callable[[nn.Module, int], None]
"""``fine_tune(model, step)``: the user's training between pruning steps.

Structured pruning replaces parameters, so the callback should build its optimiser
from ``model.parameters()`` on each call.
"""


def sparsity_schedule(final: float, steps: int, schedule: str) -> list[float]:
    """Cumulative sparsity after each step; the last entry is ``final``."""
    if schedule == "oneshot":
        return [final]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PruneError(f"steps must be a positive integer, got {steps!r}")
    if schedule == "agp":
        return [final * (1.0 - (1.0 - t / steps) ** 3) for t in range(1, steps + 1)]
    return [1.0 - (1.0 - final) ** (t / steps) for t in range(1, steps + 1)]


def run_schedule(
    model: nn.Module,
    targets: list[float],
    prune_to: Callable[[float, float], None],
    fine_tune: FineTune | None,
) -> None:
    """Call ``prune_to(target, previous)`` for each cumulative target, fine-tuning after each."""
    previous = 0.0
    for step, target in enumerate(targets):
        prune_to(target, previous)
        previous = target
        if fine_tune is not None:
            fine_tune(model, step)


def step_fraction(target: float, previous: float) -> float:
    """Fraction of the *remaining* channels to remove to go from ``previous`` to ``target``."""
    return max(0.0, (target - previous) / (1.0 - previous))
