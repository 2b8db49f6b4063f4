"""Disjoint sets over integer ids: how coupled channels end up in one group.

Every channel of every tensor the dependency tracer sees is an integer "element";
a residual add, a depthwise conv or a shared module unites elements that must be
kept or removed together. Path halving and union by size keep it near O(1) per call.
"""

from __future__ import annotations


class UnionFind:
    """Growable disjoint-set forest; :meth:`new` hands out fresh element ids."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._size: list[int] = []

    def __len__(self) -> int:
        return len(self._parent)

    def new(self, count: int) -> list[int]:
        """Create ``count`` singleton elements and return their ids."""
        start = len(self._parent)
        ids = list(range(start, start + count))
        self._parent.extend(ids)
        self._size.extend([1] * count)
        return ids

    def find(self, x: int) -> int:
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        return ra
