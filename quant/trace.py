"""torch.fx tracing that names the module it fails in: the fallback when torch.export
cannot capture a model (quant/capture.py, ``on_untraceable='float'``).

Modules that cannot be traced either raise a QuantError naming the module (strict)
or become opaque leaves that stay in float, with a warning (DESIGN.md §5).
"""

from __future__ import annotations

import warnings

import torch
from torch import fx, nn

from quant.errors import QuantError


class UntraceableRoot(QuantError):
    """The model's own forward (not a submodule) defeats torch.fx."""


class _NamingTracer(fx.Tracer):
    """Standard leaves plus ``extra_leaves``; remembers the innermost module that failed."""

    def __init__(self, extra_leaves: set[str]) -> None:
        super().__init__()
        self.extra_leaves = extra_leaves
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.extra_leaves or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.path_of_module(m)
            raise


def trace(model: nn.Module, *, float_fallback: bool, leaves: set[str] | None = None) -> fx.GraphModule:
    """Trace ``model``; with ``float_fallback`` untraceable submodules stay float leaves."""
    leaves = set(leaves or ())
    while True:
        tracer = _NamingTracer(leaves)
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # torch.fx raises many types; all mean "cannot trace here"
            culprit = tracer.failed_in
            if not culprit:
                raise UntraceableRoot(
                    f"torch.fx cannot trace the forward of {type(model).__name__} itself "
                    f"({type(exc).__name__}: {exc}); make its data-dependent control flow a submodule, "
                    "or pass on_untraceable='float' to quantize its Conv2d/Linear leaves only"
                ) from exc
            if not float_fallback:
                raise QuantError(
                    f"module '{culprit}' ({type(model.get_submodule(culprit)).__name__}) cannot be traced by "
                    f"torch.fx ({type(exc).__name__}: {exc}); pass on_untraceable='float' to keep it in float"
                ) from exc
            warnings.warn(
                f"module '{culprit}' cannot be traced ({type(exc).__name__}); it stays in float",
                stacklevel=3,
            )
            leaves.add(culprit)
            continue
        return fx.GraphModule(model, graph, class_name=type(model).__name__)


def example_shapes(gm: fx.GraphModule, example_inputs: tuple, example_kwargs: dict | None = None) -> None:
    """Annotate nodes with ``meta['tensor_meta']`` so tensor args can be told from scalars."""
    from torch.fx.passes.shape_prop import ShapeProp

    from quant.capture import flat_inputs

    with torch.no_grad():
        ShapeProp(gm).run(*flat_inputs(gm, example_inputs, example_kwargs), enable_io_processing=False)
