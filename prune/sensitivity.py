"""Sensitivity analysis: prune one layer (or coupled group) at a time and measure.

Layers differ wildly in how much pruning they tolerate; this report shows where the
budget can go before choosing per-layer amounts or protecting a layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prune.api import copy_model
from prune.masks import prune_weights, weight_layers
from prune.options import check_amount, resolve_protect
from prune.structured import dependency_groups, prune_channels
from prune.tracing import as_input_tuple


@dataclass(frozen=True)
class SensitivityReport:
    """``results[layer][amount]`` is the metric after pruning only that layer by ``amount``."""

    baseline: float
    amounts: tuple[float, ...]
    results: dict[str, dict[float, float]]
    structured: bool

    def as_dict(self) -> dict:
        return {"baseline": self.baseline, "structured": self.structured, "layers": self.results}

    def to_markdown(self) -> str:
        unit = "channels" if self.structured else "weights"
        head = "| layer | " + " | ".join(f"{100 * a:.0f}% {unit}" for a in self.amounts) + " |"
        rows = [head, "|---|" + "---:|" * len(self.amounts)]
        rows.append("| (unpruned) | " + " | ".join(f"{self.baseline:.2f}" for _ in self.amounts) + " |")
        for layer, by_amount in self.results.items():
            rows.append(f"| {layer} | " + " | ".join(f"{by_amount[a]:.2f}" for a in self.amounts) + " |")
        return "\n".join(rows)


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
    """Metric (``evaluate(model)``, e.g. accuracy) with each layer alone pruned by each amount.

    Unstructured rows are Conv/Linear layers; structured rows are coupled groups named
    by their first layer. ``model`` itself is never modified.
    """
    amounts = tuple(check_amount(a, "sensitivity amount") for a in amounts)
    protect = sorted(resolve_protect(model, protect))
    results: dict[str, dict[float, float]] = {}
    if structured:
        inputs = as_input_tuple(example_inputs, "structured sensitivity analysis")
        for group in dependency_groups(model, inputs, protect):
            if not group.prunable:
                continue
            results[group.name] = {}
            for a in amounts:
                pruned = copy_model(model)
                prune_channels(
                    pruned, {group.name: a}, example_inputs=inputs, importance=importance, protect=protect
                )
                results[group.name][a] = float(evaluate(pruned))
    else:
        for name in weight_layers(model, protect):
            results[name] = {}
            for a in amounts:
                pruned = copy_model(model)
                prune_weights(pruned, a, importance=importance, scope="layer", layers=[name])
                results[name][a] = float(evaluate(pruned))
    return SensitivityReport(float(evaluate(model)), amounts, results, structured)
