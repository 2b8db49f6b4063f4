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

from quant.constants import CALLS, constant_nodes, constant_values

MAX_FOLDED_ELEMENTS = 1 << 22  # a constant expanded to something huge stays a subgraph (file size)


def fold_constants(gm: fx.GraphModule) -> int:
    """Replace each constant subgraph feeding the rest of the graph by a buffer holding its value
    (computed by the eval-mode model itself); returns how many values were folded."""
    constant = constant_nodes(gm.graph)
    env = constant_values(gm, constant)
    folded = 0
    for node in list(gm.graph.nodes):
        value = env.get(node)
        if node.op not in CALLS or not isinstance(value, torch.Tensor) or value.numel() > MAX_FOLDED_ELEMENTS:
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
