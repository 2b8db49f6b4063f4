"""Shared fixtures: deterministic seeds and one torch thread.

One thread because CI has 2 cores: with torch's default intra-op pool the small
tensors of these tests spend more time in thread hand-off than in compute (measured:
the prune tests took 104 s with the default pool, 8 s with one thread).
"""

import random

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def mnist_split():
    """MNIST-5k, 4000 train / 1000 test, fixed seed."""
    from compress.data import load_mnist5k

    return load_mnist5k()


@pytest.fixture
def mnist_loaders(mnist_split):
    """Fresh loaders per test: a shared generator would make each test's batch order depend
    on which tests ran before it (seen: a QAT result moving 0.4 points when a test was added)."""
    from compress.data import split_loaders

    return split_loaders(mnist_split)


@pytest.fixture(scope="session")
def trained_mnist_cnn(mnist_split):
    """The BN-CNN trained once per session (≈15 s): the shared fp32 baseline."""
    from compress.data import split_loaders
    from compress.models import MnistCNN, train_classifier

    torch.manual_seed(0)
    model = MnistCNN()
    train_classifier(model, split_loaders(mnist_split)[0], epochs=5)
    return model.eval()
