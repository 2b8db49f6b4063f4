"""Constant subgraphs of a captured graph: which nodes depend on no graph input, and their values.

Read by the capture (a Linear whose bias is a constant expression, Swin V2's ``cat(q_bias, 0, v_bias)``,
is lifted as a module) and by the exporter (export/fold_constants.py folds constants with the
simulation's arithmetic). In-place ops are honoured: a node whose storage an input-dependent op writes
(a buffer cloned, then filled from the input) is not a constant, nor is anything viewing it.
"""

from __future__ import annotations

from torch import fx

CALLS = ("call_function", "call_module", "call_method")


def _schema(node: fx.Node):
    return getattr(node.target, "_schema", None) if node.op == "call_function" else None


def _mutated_args(node: fx.Node) -> list[fx.Node]:
    """The argument nodes an in-place ATen op writes to."""
    schema = _schema(node)
    if schema is None:
        return []
    written = [i for i, a in enumerate(schema.arguments) if a.alias_info is not None and a.alias_info.is_write]
    return [node.args[i] for i in written if i < len(node.args) and isinstance(node.args[i], fx.Node)]


def _aliased_input(node: fx.Node) -> fx.Node | None:
    """For a view or in-place op, the input node whose storage the result shares."""
    schema = _schema(node)
    if schema is None or not schema.returns or schema.returns[0].alias_info is None:
        return None
    first = node.args[0] if node.args else None
    return first if isinstance(first, fx.Node) else None


def constant_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on no graph input, and whose storage no input-dependent op writes."""
    forced: set[fx.Node] = set()
    while True:
        constant: set[fx.Node] = set()
        for node in graph.nodes:
            if node in forced:
                continue
            if node.op == "get_attr" or (node.op in CALLS and all(a in constant for a in node.all_input_nodes)):
                constant.add(node)
        newly = set()
        for node in graph.nodes:
            if node in constant:
                continue
            for target in _mutated_args(node):  # written at run time: it and the storage it views are not constants
                while target is not None and target not in forced:
                    newly.add(target)
                    target = _aliased_input(target)
        if not newly - forced:
            return constant
        forced |= newly


def constant_values(gm: fx.GraphModule, constant: set[fx.Node] | None = None) -> dict[fx.Node, object]:
    """The value of every constant node, computed by running the (eval-mode) graph's own ops in order."""
    constant = constant_nodes(gm.graph) if constant is None else constant
    interpreter = fx.Interpreter(gm)
    env: dict[fx.Node, object] = {}
    for node in gm.graph.nodes:
        if node in constant:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = getattr(interpreter, node.op)(node.target, args, kwargs)
    return env
