"""SmoothQuant (Xiao et al. 2022): migrate activation outliers into the weights.

Transformer activations have a few input features (channels) with values 10-100× the rest;
a per-tensor int8 grid sized for them leaves the other channels a handful of levels.  With
``s_j = max|x_j|^α / max|W_:,j|^(1-α)`` the product is unchanged, ``x W^T = (x / s)(W·s)^T``,
but ``x / s`` has flat channel ranges and ``W·s`` absorbs the outliers, which per-channel
weight quantization handles well.  α (0..1) sets how much difficulty moves to the weights.

The division is kept as an explicit per-feature multiply in front of the Linear
(:class:`SmoothedLinear`) instead of being folded into the preceding LayerNorm: in post-LN
encoders (BERT) the LayerNorm's output also feeds the residual stream, where a fold would
change the network.  Static quantization then puts its activation quantizer on the smoothed
tensor, the Linear's real input.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from quant.errors import QuantError
from quant.weight_only import collect_input_stats, linear_weight, set_module, target_names


class SmoothedLinear(nn.Module):
    """``linear(x · inv_scale)`` with the linear's weight already multiplied by the scale."""

    def __init__(self, inv_scale: torch.Tensor, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("inv_scale", inv_scale.detach().float().clone())
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)


def smoothing_scale(act_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = max|x_j|^α / max|W_:,j|^(1-α), clamped away from 0 (dead channels get 1)."""
    w_max = weight.abs().amax(0).float()
    s = act_max.clamp_min(1e-5).pow(alpha) / w_max.clamp_min(1e-5).pow(1 - alpha)
    return torch.where((act_max > 0) & (w_max > 0), s, torch.ones_like(s))


def smooth_quant(
    model: nn.Module,
    calib_loader: Iterable,
    *,
    alpha: float = 0.5,
    skip: Iterable[str] = (),
    max_batches: int | None = None,
) -> nn.Module:
    """Replaces every Linear-like module (in place) by a :class:`SmoothedLinear` whose scale comes
    from the calibration inputs' per-feature maxima; returns ``model`` (still float: quantize it
    next, e.g. with ``compress.quantize``)."""
    if not 0.0 <= alpha <= 1.0:
        raise QuantError(f"SmoothQuant alpha must lie in [0, 1], got {alpha}")
    names = target_names(model, skip)
    if not names:
        raise QuantError(f"{type(model).__name__} has no Linear layers to smooth")
    stats = collect_input_stats(model, names, calib_loader, abs_stats=True, max_batches=max_batches)
    for name in names:
        module = model.get_submodule(name)
        w = linear_weight(module).float()
        s = smoothing_scale(stats[name].abs_max, w, alpha)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(w * s)
            if module.bias is not None:
                lin.bias.copy_(module.bias)
        set_module(model, name, SmoothedLinear(1.0 / s, lin))
    return model
