"""Re-estimate BatchNorm statistics after pruning, without any training.

Removing a channel shifts the mean and variance that every later BatchNorm sees, so
its running statistics go stale and a BN network can collapse even when the removed
channels mattered little. Recomputing the statistics on a few unlabelled batches
recovers much of that loss at the cost of forwards only.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, num_batches: int = 20) -> nn.Module:
    """Reset every BatchNorm's running statistics to their average over ``num_batches``.

    ``batches`` yields inputs or (inputs, labels) pairs; only the inputs are used. The
    model is returned in eval mode; other layers (e.g. dropout) are not trained.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.eval()
    for m in norms:
        m.train()
    try:
        for batch in islice(batches, num_batches):
            model(batch[0] if isinstance(batch, list | tuple) else batch)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return model
