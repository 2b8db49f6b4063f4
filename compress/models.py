"""Small reference models and a plain training loop, shared by demos, benches and tests.

They exist so every method is measured on the same real network: a BN-CNN that
reaches ≥98% on MNIST-5k in a few CPU-seconds per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


class MnistCNN(nn.Module):
    """Conv-BN-ReLU ×3 with a residual add, global pooling and a Linear classifier.

    ``width`` scales every conv, so narrow students and pruning targets come from the
    same definition.
    """

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(1, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.conv3 = nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.conv4 = nn.Conv2d(2 * w, 4 * w, 3, padding=1, stride=2, bias=False)
        self.bn4 = nn.BatchNorm2d(4 * w)
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # 14x14
        x = F.relu(self.bn2(self.conv2(x)))
        x = x + F.relu(self.bn3(self.conv3(x)))  # residual add
        x = F.relu(self.bn4(self.conv4(x)))  # 7x7
        x = torch.flatten(self.gap(x), 1)
        return self.fc(x)


def train_classifier(
    model: nn.Module,
    loader: Iterable,
    epochs: int = 4,
    lr: float = 3e-3,
    *,
    loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> nn.Module:
    """Adam + one-cycle schedule; ``loss_fn(model, x, y)`` overrides plain cross-entropy."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    steps = epochs * len(loader)  # type: ignore[arg-type]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    model.train()
    for epoch in tqdm(range(epochs), desc="train", disable=not progress):
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle every epoch
            sampler.set_epoch(epoch)
        for x, y in loader:
            loss = loss_fn(model, x, y) if loss_fn else F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy in percent over a loader of (inputs, labels)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


class OutlierMLP(nn.Module):
    """Linear-ReLU-Linear: the constructed heavy-tailed case for comparing calibrators."""

    def __init__(self, dim: int = 64, hidden: int = 256, out: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def heavy_tailed_batches(
    n_batches: int, batch: int = 256, dim: int = 64, outlier_rate: float = 2e-5, outlier_scale: float = 100.0,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Gaussian inputs where a few elements (``outlier_rate``) are ``outlier_scale``× larger.

    One outlier in ~50k values stretches a min/max range ~25× and wastes most int8
    codes; percentile and KL clip it.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        x = torch.randn(batch, dim, generator=g)
        mask = torch.rand(batch, dim, generator=g) < outlier_rate
        x = torch.where(mask, x.sign() * outlier_scale, x)
        out.append(x)
    if outlier_rate > 0:
        out[0][0, 0] = outlier_scale  # every calibration run sees at least one outlier
    return out


@torch.no_grad()
def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``approx`` against ``reference``, in dB."""
    noise = (reference - approx).double().pow(2).sum().clamp_min(1e-30)
    return float(10 * torch.log10(reference.double().pow(2).sum() / noise))


def trained_like_batchnorm(model: nn.Module, shape: tuple[int, ...], steps: int = 4) -> nn.Module:
    """Trained-like BatchNorm: per-channel statistics from data and log-normal γ.

    Random init leaves every BN at γ=1, μ=0, σ=1, so folded weights have near-equal
    channel ranges; trained MobileNets have γ spread over orders of magnitude (the
    reason per-tensor weights fail on them). No pretrained weights can be downloaded
    here, so γ ~ exp(N(0, 1)) stands in for training.
    """
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=g).exp())
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape))
    return model.eval()
