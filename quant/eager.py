"""The fallback when torch.fx cannot trace a model's own forward: quantize leaf modules only.

Each Conv2d / Linear becomes an :class:`EagerQuantLeaf`: a quantizer on its input, the
int8 weighted op (int32 bias, exact kernel arithmetic in eval) and a quantizer on its
output. Everything between leaves stays float, BatchNorm is not folded, and the result
cannot be exported (the exporter needs the graph); it measures what int8 layers cost
when the model's control flow is beyond tracing (DESIGN.md §5).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from quant.fake_quant import FakeQuantize
from quant.modules import QuantConv2d, QuantLinear
from quant.prepare import QConfig


class EagerQuantLeaf(nn.Module):
    """input quantizer → QuantConv2d / QuantLinear → output quantizer, in eager mode."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, qconfig: QConfig, name: str) -> None:
        super().__init__()
        self.input_quant = FakeQuantize(qconfig.activation, qconfig.observer(f"{name} input"), name=f"{name} input")
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        self.layer = cls(layer, qconfig.weight, None, name)
        self.layer.output_spec = qconfig.activation
        self.output_quant = FakeQuantize(
            qconfig.activation, qconfig.observer(f"{name} output"), name=f"{name} output"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_quant(x)
        out = self.output_quant
        y = self.layer(x, self.input_quant.scale, out.scale if out.quant_enabled else None, out.zero_point)
        return out(y)


def prepare_leaves(model: nn.Module, qconfig: QConfig) -> nn.Module:
    """A copy of ``model`` whose Conv2d / Linear modules (not in ``qconfig.skip``) are EagerQuantLeafs."""
    model = copy.deepcopy(model).eval()
    targets = [
        (name, m) for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and name not in qconfig.skip
    ]
    for name, layer in targets:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, EagerQuantLeaf(layer, qconfig, name))
    return model
