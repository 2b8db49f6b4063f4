"""Graph passes, each a function Graph -> Graph tested on its own, and the order the session
runs them in."""

from runtime.graph import Graph
from runtime.passes.constant_fold import constant_fold
from runtime.passes.dead_nodes import remove_dead_nodes
from runtime.passes.fold_qdq import fold_qdq
from runtime.passes.fuse_clamps import fuse_clamps
from runtime.passes.layout import choose_layout


def optimize(graph: Graph) -> Graph:
    """Constant nodes and shape arithmetic first (scales may come from Constant nodes), then
    clamps, then the integer fold, then whatever became constant, dead nodes and layout."""
    graph = constant_fold(graph, skip={"DequantizeLinear"})
    graph = fuse_clamps(graph)
    graph = fold_qdq(graph)
    graph = constant_fold(graph)
    graph = remove_dead_nodes(graph)
    return choose_layout(graph)


__all__ = ["choose_layout", "constant_fold", "fold_qdq", "fuse_clamps", "optimize", "remove_dead_nodes"]
