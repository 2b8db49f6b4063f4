"""Small models that exercise one coupling rule each, shared by the pruning tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class ConcatNet(nn.Module):
    """Inception-style branches concatenated, then a DenseNet-style concat with the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.b1 = nn.Conv2d(8, 6, 1)
        self.b2 = nn.Conv2d(8, 10, 3, padding=1)
        self.b3 = nn.Conv2d(8, 4, 1)
        self.bn_cat = nn.BatchNorm2d(20)
        self.dense = conv_bn(28, 12)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        c = F.relu(self.bn_cat(torch.cat([self.b1(s), self.b2(s), self.b3(s)], dim=1)))
        d = self.dense(torch.cat((s, c), 1))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(d, 1), 1))


class FlattenNet(nn.Module):
    """Conv features flattened with their 4×4 spatial extent into a Linear, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(1, 8), nn.MaxPool2d(2), conv_bn(8, 16), nn.AdaptiveAvgPool2d(4))
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class GroupedNet(nn.Module):
    """A grouped conv (4 groups, 2 in / 3 out each) between two pointwise convs."""

    def __init__(self) -> None:
        super().__init__()
        self.pw1 = conv_bn(3, 8, 1)
        self.grouped = conv_bn(8, 12, 3, groups=4)
        self.pw2 = nn.Conv2d(12, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.grouped(self.pw1(x))).mean((2, 3))


class UnknownOpNet(nn.Module):
    """Channel shuffle by view/transpose: the tracer must leave those channels alone."""

    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 8)
        self.b = conv_bn(8, 8)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.a(x))
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.c(x)


class Untraceable(nn.Module):
    """Data-dependent control flow, which torch.fx cannot trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.conv(x)
        return self.conv(-x)
