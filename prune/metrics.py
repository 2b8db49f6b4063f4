"""Size and cost of a model: parameters, multiply-accumulates, per-layer sparsity.

MACs are counted by forward hooks on Conv and Linear layers (the layers that carry
nearly all the arithmetic), per sample, for the given input shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from prune.channel_graph import is_prunable_conv
from prune.masks import effective_weight, weight_layers


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (a masked weight counts once, zeros included)."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.endswith("weight_mask"))


@torch.no_grad()
def count_macs(model: nn.Module, example_inputs: torch.Tensor | tuple) -> int:
    """Multiply-accumulates of Conv and Linear layers for one sample of ``example_inputs``."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    batch = inputs[0].shape[0] if inputs[0].dim() > 0 else 1
    total = 0

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if is_prunable_conv(module):
            fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            fan_in = module.in_features
        total += out.numel() // batch * fan_in

    layers = [m for m in model.modules() if is_prunable_conv(m) or isinstance(m, nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for module, mode in modes.items():
            module.training = mode
    return total


@dataclass(frozen=True)
class LayerSparsity:
    params: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.params, 1)


@dataclass(frozen=True)
class SparsityReport:
    """Zero weights per Conv/Linear layer, as a dict and as a markdown table."""

    layers: dict[str, LayerSparsity]

    @property
    def total(self) -> LayerSparsity:
        return LayerSparsity(
            sum(s.params for s in self.layers.values()), sum(s.zeros for s in self.layers.values())
        )

    def as_dict(self) -> dict[str, float]:
        return {name: s.sparsity for name, s in self.layers.items()} | {"total": self.total.sparsity}

    def to_markdown(self) -> str:
        rows = ["| layer | weights | zeros | sparsity |", "|---|---:|---:|---:|"]
        for name, s in [*self.layers.items(), ("**total**", self.total)]:
            rows.append(f"| {name} | {s.params} | {s.zeros} | {100 * s.sparsity:.1f}% |")
        return "\n".join(rows)


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Per-layer fraction of zero weights (masked or permanent) in Conv and Linear layers."""
    layers = {}
    for name, module in weight_layers(model).items():
        w = effective_weight(module)
        layers[name] = LayerSparsity(w.numel(), int((w == 0).sum()))
    return SparsityReport(layers)
