"""Physically remove channels: slice weights, biases and BatchNorm statistics in place.

After this the model holds plain, smaller Conv/BatchNorm/Linear modules with their
size attributes (in_channels, groups, num_features, ...) updated, so it is an ordinary
nn.Module for training, tracing, quantization and export.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prune.channel_graph import ChannelGraph, Elements, is_prunable_conv
from prune.errors import PruneError


def shrink(graph: ChannelGraph, removed: set[int]) -> dict[str, tuple[int, int]]:
    """Drop every channel whose component is in ``removed``; returns {layer: (before, after)} widths."""
    widths: dict[str, tuple[int, int]] = {}
    for layer in graph.layers.values():
        out_keep = _kept(graph, layer.out_elems, removed)
        in_keep = _kept(graph, layer.in_elems, removed)
        module = layer.module
        if is_prunable_conv(module):
            before = module.out_channels
            _shrink_conv(layer.name, module, out_keep, in_keep)
            widths[layer.name] = (before, module.out_channels)
        elif isinstance(module, nn.Linear):
            before = module.out_features
            _slice(module, "weight", out_keep, 0)
            _slice(module, "bias", out_keep, 0)
            _slice(module, "weight", in_keep, 1)
            module.out_features, module.in_features = module.weight.shape
            widths[layer.name] = (before, module.out_features)
        elif isinstance(module, _BatchNorm) and in_keep is not None:
            for attr in ("weight", "bias", "running_mean", "running_var"):
                _slice(module, attr, in_keep, 0)
            module.num_features = len(in_keep)
    return widths


def _kept(graph: ChannelGraph, elems: Elements | None, removed: set[int]) -> list[int] | None:
    """Indices to keep, or None when nothing along this axis goes."""
    if elems is None:
        return None
    keep = [i for i, e in enumerate(elems) if graph.root(e) not in removed]
    return None if len(keep) == len(elems) else keep


def _slice(module: nn.Module, attr: str, keep: list[int] | None, dim: int) -> None:
    tensor = getattr(module, attr, None)
    if keep is None or tensor is None:
        return
    index = torch.tensor(keep, dtype=torch.long, device=tensor.device)
    data = tensor.detach().index_select(dim, index).clone()
    if isinstance(tensor, nn.Parameter):
        setattr(module, attr, nn.Parameter(data, requires_grad=tensor.requires_grad))
    else:
        setattr(module, attr, data)


def _shrink_conv(name: str, conv: nn.Module, out_keep: list[int] | None, in_keep: list[int] | None) -> None:
    out_per = conv.out_channels // conv.groups
    in_per = conv.in_channels // conv.groups
    _slice(conv, "weight", out_keep, 0)
    _slice(conv, "bias", out_keep, 0)
    new_out = conv.weight.shape[0]
    new_in = conv.in_channels if in_keep is None else len(in_keep)
    if conv.groups == 1:
        _slice(conv, "weight", in_keep, 1)
        conv.in_channels, conv.out_channels = new_in, new_out
        return
    # Grouped/depthwise: the tracer couples each input block with its output block, so
    # whole groups go; the per-group fan-in (weight dim 1) is unchanged.
    groups = new_out // out_per
    if new_out % out_per or new_in != groups * in_per:
        raise PruneError(
            f"grouped conv {name!r}: keeping {new_in} inputs and {new_out} outputs does not leave "
            f"whole groups of {in_per} in / {out_per} out"
        )
    conv.in_channels, conv.out_channels, conv.groups = new_in, new_out, groups
