"""Fold the frozen model's constant subgraphs with the simulation's own arithmetic before export.

A value computed from parameters and buffers alone (Swin V2's ``exp(clamp(logit_scale))`` and
its continuous position bias MLP, a mask built from constants) is not an input-dependent op: the
exporter's optimizer folds it in numpy float32, the runtime would fold it again with its own
kernels, and the simulation computes it with ``quant.float_ops``. One ulp apart (numpy's float32
exp gives 10.000001 where exp in float64 rounds to 10.0) is enough to move every attention score
of a Swin V2 off the simulation's. So the simulation computes each constant once, here, and the
file stores that tensor (DESIGN.md "Float ops between quantizers").
"""

from __future__ import annotations

import torch
from torch import fx

MAX_FOLDED_ELEMENTS = 1 << 22  # a constant expanded to something huge stays a subgraph (file size)
_CALLS = ("call_function", "call_module", "call_method")


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


def _constant_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on no graph input, and whose storage no input-dependent op writes."""
    forced: set[fx.Node] = set()
    while True:
        constant: set[fx.Node] = set()
        for node in graph.nodes:
            if node in forced:
                continue
            if node.op == "get_attr" or (node.op in _CALLS and all(a in constant for a in node.all_input_nodes)):
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


def fold_constants(gm: fx.GraphModule) -> int:
    """Replace each constant subgraph feeding the rest of the graph by a buffer holding its value
    (computed by the eval-mode model itself); returns how many values were folded."""
    constant = _constant_nodes(gm.graph)
    interpreter = fx.Interpreter(gm)
    env: dict[fx.Node, object] = {}
    for node in gm.graph.nodes:
        if node in constant:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = getattr(interpreter, node.op)(node.target, args, kwargs)
    folded = 0
    for node in list(gm.graph.nodes):
        value = env.get(node)
        if node.op not in _CALLS or not isinstance(value, torch.Tensor) or value.numel() > MAX_FOLDED_ELEMENTS:
            continue
        if all(user in constant for user in node.users):
            continue  # consumed inside the constant subgraph only
        name = f"_folded_constant_{folded}"
        gm.register_buffer(name, value.detach().clone())
        with gm.graph.inserting_before(node):
            attr = gm.graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr, delete_user_cb=lambda user: user not in constant)
        folded += 1
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return folded
