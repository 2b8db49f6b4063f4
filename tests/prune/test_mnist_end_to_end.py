"""End to end on MNIST-5k: pruning plus fine-tuning stays within a point of fp32.

Fine-tuning here is the project's own training loop, passed as the callback, which is
exactly how a user recovers accuracy; without it both prunings lose far more.
"""

import pytest
import torch

import compress
from compress.data import split_loaders
from compress.models import accuracy, train_classifier
from compress.pruning import count_params, sparsity_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def baseline(trained_mnist_cnn, mnist_split):
    torch.set_num_threads(1)
    return accuracy(trained_mnist_cnn, split_loaders(mnist_split)[1])


def fine_tuner(loader):
    return lambda model, step: train_classifier(model, loader, epochs=3)


def test_half_the_channels_with_fine_tuning(trained_mnist_cnn, mnist_loaders, baseline):
    train, test = mnist_loaders
    x = torch.randn(1, 1, 28, 28)
    raw = compress.prune(trained_mnist_cnn, amount=0.5, structured=True, example_inputs=x)
    tuned = compress.prune(
        trained_mnist_cnn, amount=0.5, structured=True, example_inputs=x, fine_tune=fine_tuner(train)
    )
    assert count_params(tuned) < 0.35 * count_params(trained_mnist_cnn)
    assert accuracy(tuned, test) >= baseline - 1.0
    assert accuracy(raw, test) < baseline - 10.0


def test_ninety_percent_of_weights_with_fine_tuning(trained_mnist_cnn, mnist_loaders, baseline):
    train, test = mnist_loaders
    raw = compress.prune(trained_mnist_cnn, amount=0.9)
    tuned = compress.prune(trained_mnist_cnn, amount=0.9, fine_tune=fine_tuner(train), permanent=True)
    assert sparsity_report(tuned).total.sparsity == pytest.approx(0.9, abs=1e-3)
    assert accuracy(tuned, test) >= baseline - 1.0
    assert accuracy(raw, test) < baseline - 10.0
