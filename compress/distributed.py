"""torchrun support for the recipe stages: DDP wrapping, data sharding, one writer.

Under ``torchrun`` every rank runs the same recipe; training stages wrap the model in
DistributedDataParallel and shard the training data, calibration observers already
all-reduce across ranks (quant/observers.py), and only rank 0 writes files, so ranks
never race on the same checkpoint or report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler


def init_from_env() -> bool:
    """Join the process group torchrun describes (gloo: CPU); False when not launched by torchrun."""
    if not dist.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_writer() -> bool:
    """Rank 0, or the only process."""
    return not active() or dist.get_rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """DDP around ``model`` when distributed (gradients averaged across ranks), else ``model``."""
    return DistributedDataParallel(model) if active() else model


def shard(loader: Iterable, seed: int) -> Iterable:
    """Each rank's share of a map-style DataLoader's data; other loaders are used whole."""
    if not active() or not isinstance(loader, DataLoader) or not hasattr(loader.dataset, "__len__"):
        return loader
    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=seed)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers)
