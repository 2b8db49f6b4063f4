"""Structured (channel) pruning: trace, group coupled channels, score, cut, shrink, check.

The model is shrunk in place and checked with one forward on ``example_inputs``: the
output must keep its shape, or the error says which internal step went wrong rather
than leaving a broken model behind silently.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from prune.channel_graph import ChannelGraph, build_channel_graph
from prune.errors import PruneError
from prune.importance import component_scores
from prune.masks import masked_modules
from prune.options import IMPORTANCES, SCOPES, check_amount, check_choice, resolve_protect
from prune.plan import ChannelGroup, coupled_groups, select_removed
from prune.shrink import shrink
from prune.tracing import as_input_tuple, trace_with_shapes


def analyse_channels(
    model: nn.Module, example_inputs: torch.Tensor | tuple, protect: Iterable[str | nn.Module] = ()
) -> tuple[ChannelGraph, list[ChannelGroup]]:
    """Trace ``model`` and return its coupled-channel graph and groups (nothing is changed)."""
    inputs = as_input_tuple(example_inputs, "structured pruning")
    if masked_modules(model):
        raise PruneError(
            "structured pruning needs plain weights, but these layers still carry unstructured masks: "
            f"{', '.join(masked_modules(model))}; call make_permanent(model) first"
        )
    gm = trace_with_shapes(model, inputs)
    graph = build_channel_graph(gm, resolve_protect(model, protect))
    return graph, coupled_groups(graph)


def dependency_groups(
    model: nn.Module, example_inputs: torch.Tensor | tuple, protect: Iterable[str | nn.Module] = ()
) -> list[ChannelGroup]:
    """The coupled layer groups structured pruning would use, for inspection."""
    return analyse_channels(model, example_inputs, protect)[1]


def prune_channels(
    model: nn.Module,
    amount: float | dict[str, float],
    *,
    example_inputs: torch.Tensor | tuple,
    importance: str = "l1",
    scope: str = "global",
    protect: Iterable[str | nn.Module] = (),
) -> dict[str, tuple[int, int]]:
    """Remove a fraction of the output channels of ``model`` in place.

    ``amount`` is the fraction of prunable channel components removed (globally, or
    from each coupled group with ``scope="layer"``), or a {group name: fraction} map.
    Returns {layer name: (channels before, channels after)}.
    """
    if isinstance(amount, dict):
        for name, a in amount.items():
            check_amount(a, f"amount for group {name!r}")
    else:
        check_amount(amount)
    check_choice(importance, IMPORTANCES, "importance")
    check_choice(scope, SCOPES, "scope")
    inputs = as_input_tuple(example_inputs, "structured pruning")
    graph, groups = analyse_channels(model, inputs, protect)
    if isinstance(amount, dict):
        unknown = set(amount) - {g.name for g in groups}
        if unknown:
            raise PruneError(f"no coupled group named {', '.join(sorted(unknown))}")
    before = _output_shapes(model, inputs)
    removed = select_removed(groups, component_scores(graph, importance), amount, scope)
    widths = shrink(graph, removed)
    try:
        after = _output_shapes(model, inputs)
    except Exception as exc:
        raise PruneError(f"pruned {type(model).__name__} no longer runs: {exc}") from exc
    if after != before:
        raise PruneError(f"pruning changed the output shapes of {type(model).__name__}: {before} -> {after}")
    return widths


@torch.no_grad()
def _output_shapes(model: nn.Module, inputs: tuple) -> list[tuple[int, ...]]:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        out = model(*inputs)
    finally:
        for module, mode in modes.items():
            module.training = mode
    leaves = out if isinstance(out, list | tuple) else [out]
    return [tuple(t.shape) for t in leaves if isinstance(t, torch.Tensor)]
