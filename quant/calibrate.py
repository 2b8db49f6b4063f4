"""Run calibration data through a prepared model, then freeze the quantizers.

Loaders may yield a tensor, an (inputs, labels) tuple/list, a tuple of inputs, or a
dict of keyword inputs (label keys dropped), or anything a user ``transform_fn`` turns
into model inputs (``split_batch`` states the rule), so image and transformer loaders
both work unchanged.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from quant.errors import QuantError
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.modules import QuantWeighted

LABEL_KEYS = ("label", "labels", "target", "targets", "y")
TransformFn = Callable[[Any], Any]


def split_batch(
    batch: Any, transform_fn: TransformFn | None = None, model: nn.Module | None = None
) -> tuple[tuple, dict]:
    """(args, kwargs) for ``model(*args, **kwargs)`` from one loader item.

    With ``transform_fn``, ``transform_fn(batch)`` is the model's input: a tensor, a tuple
    of positional inputs, or a dict of keyword inputs (NNCF's rule). Without it:
    a tensor is the input; a dict holds keyword inputs (label keys dropped); a tuple/list
    is ``(inputs, label)`` (torchvision, TensorDataset) unless every element is an input:
    its last element is no class label (None or a 1-D integer tensor) and ``model.forward``
    takes that many positional inputs, e.g. ``(input_ids, attention_mask)``.
    """
    if transform_fn is not None:
        out = transform_fn(batch)
        if isinstance(out, dict):
            return (), dict(out)
        return (tuple(out) if isinstance(out, (tuple, list)) else (out,)), {}
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, (tuple, list)) and batch:
        first = batch[0]
        if isinstance(first, dict):
            return (), {k: v for k, v in first.items() if k not in LABEL_KEYS}
        if isinstance(first, (tuple, list)):
            return tuple(first), {}
        if len(batch) > 1 and not _is_label(batch[-1]) and _positional_inputs(model) >= len(batch):
            return tuple(batch), {}
        return (first,), {}
    if isinstance(batch, dict):
        return (), {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    raise QuantError(
        f"calibration loader yielded {type(batch).__name__}; expected a tensor, an (inputs, labels) tuple or "
        "a dict, or pass transform_fn=lambda batch: <model inputs>"
    )


def _is_label(value: Any) -> bool:
    """Class labels: None or a 1-D integer tensor (one index per sample)."""
    if value is None:
        return True
    return isinstance(value, torch.Tensor) and value.dim() <= 1 and not value.is_floating_point()


def _positional_inputs(model: nn.Module | None) -> int:
    """How many positional inputs ``model.forward`` accepts (0 when unknown)."""
    if model is None:
        return 0
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 0
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 1 << 30
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


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
    model: nn.Module, loader: Iterable, *, progress: bool = True, max_batches: int | None = None,
    transform_fn: TransformFn | None = None, input_model: nn.Module | None = None,
) -> int:
    """Observe activations over ``loader`` in float; returns the number of batches seen.

    Batches become inputs by :func:`split_batch` (``input_model``: the float model whose
    forward signature decides how tuples are read; default ``model``)."""
    set_mode(model, observe=True, quant=False)
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = 0
    for batch in tqdm(loader, desc="calibrate", disable=not progress, leave=False):
        args, kwargs = split_batch(batch, transform_fn, input_model or model)
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
