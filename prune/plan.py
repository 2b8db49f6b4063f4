"""Which channel components to remove: coupled groups, then a per-layer or global cut.

A *component* is a set of channels that must go together (one filter, or the same
channel across a whole residual chain). A *group* is a set of layers whose channels
are coupled; in per-layer scope each group loses the same fraction, in global scope
the lowest-scoring components anywhere go first. A group always keeps one component,
so no layer is ever emptied.
"""

from __future__ import annotations

from dataclasses import dataclass

from prune.channel_graph import ChannelGraph
from prune.union_find import UnionFind


@dataclass(frozen=True)
class ChannelGroup:
    """Layers whose output channels are coupled, and their channel components.

    ``name`` is the first member in graph order; ``prunable`` excludes components
    that touch a graph output, a protected layer or an op the tracer does not know.
    """

    name: str
    layers: tuple[str, ...]
    components: tuple[int, ...]
    prunable: tuple[int, ...]


def coupled_groups(graph: ChannelGraph) -> list[ChannelGroup]:
    """Group producer layers that share any channel component (in graph order)."""
    producers = graph.producers()
    index = {layer.name: i for i, layer in enumerate(producers)}
    layer_uf = UnionFind()
    layer_uf.new(len(producers))
    first_layer: dict[int, int] = {}
    for layer in producers:
        assert layer.out_elems is not None
        for e in layer.out_elems:
            root = graph.root(e)
            if root in first_layer:
                layer_uf.union(first_layer[root], index[layer.name])
            else:
                first_layer[root] = index[layer.name]
    blocked = graph.blocked_roots()
    members: dict[int, list[str]] = {}
    comps: dict[int, list[int]] = {}
    for layer in producers:
        members.setdefault(layer_uf.find(index[layer.name]), []).append(layer.name)
    for root, li in first_layer.items():
        comps.setdefault(layer_uf.find(li), []).append(root)
    groups = []
    for key, names in members.items():
        roots = tuple(comps.get(key, ()))
        prunable = tuple(r for r in roots if r not in blocked)
        groups.append(ChannelGroup(names[0], tuple(names), roots, prunable))
    return groups


def select_removed(
    groups: list[ChannelGroup],
    scores: dict[int, float],
    amount: float | dict[str, float],
    scope: str,
) -> set[int]:
    """Roots of the components to remove.

    ``amount`` is the fraction of prunable components to remove: one number, or (per
    layer scope) a fraction per group name, groups not named being left whole.
    """
    if scope == "layer" or isinstance(amount, dict):
        removed: set[int] = set()
        for g in groups:
            a = amount.get(g.name, 0.0) if isinstance(amount, dict) else amount
            k = min(round(a * len(g.prunable)), len(g.prunable), len(g.components) - 1)
            removed.update(sorted(g.prunable, key=lambda r: scores.get(r, 0.0))[: max(k, 0)])
        return removed
    owner = {r: g for g in groups for r in g.prunable}
    budget = round(amount * len(owner))
    left = {g.name: len(g.components) for g in groups}
    removed = set()
    for root in sorted(owner, key=lambda r: scores.get(r, 0.0)):
        if len(removed) >= budget:
            break
        g = owner[root]
        if left[g.name] > 1:
            removed.add(root)
            left[g.name] -= 1
    return removed
