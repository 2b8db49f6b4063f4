"""Symbolic tracing plus one real forward to learn every tensor's shape.

Structured pruning needs the graph (which layer feeds which) and the shapes (how
many spatial positions a flatten folds into each channel), so both come from here,
and every failure becomes a :class:`PruneError` that names the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from prune.errors import PruneError


def as_input_tuple(example_inputs: torch.Tensor | Sequence[torch.Tensor] | None, what: str) -> tuple:
    """Normalise ``example_inputs`` to a tuple; structured pruning cannot guess shapes."""
    if example_inputs is None:
        raise PruneError(f"{what} needs example_inputs (a tensor or tuple of tensors) to trace shapes")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def trace_with_shapes(model: nn.Module, example_inputs: tuple) -> fx.GraphModule:
    """Trace ``model`` with torch.fx and annotate each node with its output shape.

    The GraphModule shares its submodules with ``model``, so shrinking a module found
    through the graph shrinks the user's model. The shape pass runs in eval mode under
    no_grad so BatchNorm running statistics are not disturbed.
    """
    name = type(model).__name__
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise PruneError(
            f"cannot trace model {name} with torch.fx ({type(exc).__name__}: {exc}); structured pruning "
            "needs a traceable model (unstructured pruning does not)"
        ) from exc
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as exc:
        raise PruneError(
            f"model {name} failed on example_inputs while propagating shapes ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        for module, mode in modes.items():
            module.training = mode
    return gm


def node_shape(node: fx.Node) -> torch.Size | None:
    """The output shape recorded by the shape pass, or None for non-tensor outputs."""
    meta = node.meta.get("tensor_meta")
    return meta.shape if isinstance(meta, TensorMetadata) else None
