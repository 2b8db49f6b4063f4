"""Run calibration data through a prepared model, then freeze the quantizers.

Loaders may yield a tensor, an (inputs, labels) tuple/list, or a dict of keyword
inputs (label keys dropped), so image and transformer loaders both work unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from quant.errors import QuantError
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.modules import QuantWeighted

LABEL_KEYS = ("label", "labels", "target", "targets", "y")


def split_batch(batch: Any) -> tuple[tuple, dict]:
    """(args, kwargs) for ``model(*args, **kwargs)`` from one loader item."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, (tuple, list)) and batch:
        first = batch[0]
        return (tuple(first) if isinstance(first, (tuple, list)) else (first,)), {}
    if isinstance(batch, dict):
        return (), {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    raise QuantError(
        f"calibration loader yielded {type(batch).__name__}; expected a tensor, an (inputs, labels) tuple or a dict"
    )


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def set_mode(model: nn.Module, *, observe: bool, quant: bool) -> None:
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            m.enable(observe=observe, quant=quant)


@torch.no_grad()
def calibrate(
    model: nn.Module, loader: Iterable, *, progress: bool = True, max_batches: int | None = None
) -> int:
    """Observe activations over ``loader`` in float; returns the number of batches seen."""
    set_mode(model, observe=True, quant=False)
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = 0
    for batch in tqdm(loader, desc="calibrate", disable=not progress, leave=False):
        args, kwargs = split_batch(batch)
        model(*to_device(args, device), **to_device(kwargs, device))
        n += 1
        if max_batches is not None and n >= max_batches:
            break
    if n == 0:
        raise QuantError("the calibration loader is empty: it yielded no batch")
    return n


@torch.no_grad()
def freeze(model: nn.Module, *, on_zero_range: str = "error") -> None:
    """Merge statistics across ranks, compute qparams, and switch to int8 simulation."""
    if on_zero_range not in ("error", "warn"):
        raise QuantError(f"on_zero_range must be 'error' or 'warn', got {on_zero_range!r}")
    for m in model.modules():
        if not isinstance(m, FakeQuantize):
            continue
        m.observer.all_reduce()
        if isinstance(m, WeightFakeQuantize):
            continue  # recomputed from the weight itself on the next call
        try:
            m.compute_qparams(check_zero_range=True)
        except QuantError as exc:
            if on_zero_range == "error" or "zero range" not in str(exc):
                raise
            warnings.warn(str(exc), stacklevel=2)
            m.compute_qparams(check_zero_range=False)
    for m in model.modules():  # weights: qparams of their final values
        if isinstance(m, QuantWeighted):
            m.refresh_weight_qparams()
    set_mode(model, observe=False, quant=True)
