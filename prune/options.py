"""Argument checks shared by every pruning entry point, so errors read the same everywhere."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from prune.errors import PruneError

IMPORTANCES = ("l1", "l2", "taylor", "bn_gamma")
SCOPES = ("global", "layer")


def check_amount(amount: float, what: str = "amount") -> float:
    """Fractions must lie in [0, 1): removing everything leaves no model."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise PruneError(f"{what} must be a number in [0, 1), got {amount!r}")
    if not 0.0 <= float(amount) < 1.0:
        raise PruneError(f"{what} must be in [0, 1), got {amount}")
    return float(amount)


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise PruneError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def resolve_protect(model: nn.Module, protect: Iterable[str | nn.Module]) -> set[str]:
    """Qualified names of the protected modules; given modules or names, unknown ones are errors."""
    by_id = {id(m): name for name, m in model.named_modules()}
    names = set(by_id.values())
    out: set[str] = set()
    for item in protect:
        if isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise PruneError(f"protected module {type(item).__name__} is not part of the model")
            out.add(by_id[id(item)])
        elif isinstance(item, str):
            if item not in names:
                raise PruneError(f"protected layer {item!r} is not a module of the model")
            out.add(item)
        else:
            raise PruneError(f"protect takes module names or modules, got {item!r}")
    # protecting a container protects everything inside it
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in out) and n}
