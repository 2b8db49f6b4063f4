"""How much each channel matters, and how coupled channels pool their scores.

Raw norms are not comparable across layers (a 3×3×512 filter has a larger L1 than a
1×1×64 one), so every layer's scores are divided by that layer's mean before a
component (a set of coupled channels) averages its members. That makes global
ranking compare like with like and lets a residual group vote as one.
"""

from __future__ import annotations

import torch

from prune.channel_graph import ChannelGraph, Layer
from prune.errors import PruneError

_EPS = 1e-12


def row_scores(layer: Layer, importance: str) -> torch.Tensor:
    """Per-output-channel score of a Conv/Linear: l1, l2 or first-order Taylor |Σ w·∂L/∂w|."""
    weight = layer.module.weight
    w = weight.detach().flatten(1).float()
    if importance == "l2":
        return w.pow(2).sum(1).sqrt()
    if importance == "taylor":
        if weight.grad is None:
            raise PruneError(
                f"taylor importance needs gradients, but layer {layer.name!r} has no .grad: "
                "run loss.backward() on a batch before pruning"
            )
        return (w * weight.grad.detach().flatten(1).float()).sum(1).abs()
    return w.abs().sum(1)


def _add_normalised(
    graph: ChannelGraph, sums: dict[int, list[float]], elems: list[int], scores: torch.Tensor
) -> None:
    scores = scores / (scores.mean() + _EPS)
    for e, s in zip(elems, scores.tolist(), strict=True):
        entry = sums.setdefault(graph.root(e), [0.0, 0])
        entry[0] += s
        entry[1] += 1


def component_scores(graph: ChannelGraph, importance: str) -> dict[int, float]:
    """Mean normalised score of each component, keyed by its root element.

    ``bn_gamma`` scores a channel by |γ| of the BatchNorm that normalises it (network
    slimming); components that meet no BatchNorm fall back to l1.
    """
    sums: dict[int, list[float]] = {}
    if importance == "bn_gamma":
        for layer in graph.layers.values():
            if layer.out_elems is None and layer.in_elems is not None and layer.module.weight is not None:
                _add_normalised(graph, sums, layer.in_elems, layer.module.weight.detach().abs().float())
        fallback: dict[int, list[float]] = {}
        for layer in graph.producers():
            _add_normalised(graph, fallback, layer.out_elems, row_scores(layer, "l1"))
        for root, entry in fallback.items():
            sums.setdefault(root, entry)
    else:
        for layer in graph.producers():
            _add_normalised(graph, sums, layer.out_elems, row_scores(layer, importance))
    return {root: total / count for root, (total, count) in sums.items()}
