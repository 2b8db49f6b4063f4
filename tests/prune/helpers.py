"""Test helper: silence chosen channels so pruning them must leave outputs unchanged."""

from __future__ import annotations

import torch
from torch import nn

from prune.plan import select_removed
from prune.structured import analyse_channels


@torch.no_grad()
def silence_channels(model: nn.Module, x: torch.Tensor, amount: float, seed: int = 0) -> int:
    """Zero a random ``amount`` of each coupled group's prunable channels in place.

    Every producer row (weight and bias) of a chosen component and every BatchNorm γ/β
    on it is set to zero, so the channel carries exact zeros through ReLU-style
    networks and its l1 importance is the lowest. Pruning the same amount per layer must
    then remove exactly these channels and leave the output unchanged. Returns the
    number of silenced components.
    """
    graph, groups = analyse_channels(model, x)
    gen = torch.Generator().manual_seed(seed)
    random_scores = {r: float(torch.rand((), generator=gen)) for g in groups for r in g.prunable}
    chosen = select_removed(groups, random_scores, amount, "layer")
    for layer in graph.layers.values():
        m = layer.module
        if layer.out_elems is not None:
            rows = [i for i, e in enumerate(layer.out_elems) if graph.root(e) in chosen]
            m.weight[rows] = 0
            if m.bias is not None:
                m.bias[rows] = 0
        elif layer.in_elems is not None and m.weight is not None:
            rows = [i for i, e in enumerate(layer.in_elems) if graph.root(e) in chosen]
            m.weight[rows] = 0
            m.bias[rows] = 0
    return len(chosen)
