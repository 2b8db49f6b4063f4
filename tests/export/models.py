"""Small models the export tests share."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """Pre-LN self-attention + GELU MLP over (batch, tokens, dim), then a mean-pooled classifier.

    It exercises what CNNs do not: Linear on 3-D inputs, LayerNorm, GELU, activation ×
    activation matmuls, softmax, size()-based reshapes, transpose/permute and scalar math.
    """

    def __init__(self, dim: int = 32, heads: int = 4, tokens: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(16, dim)
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, t, c = x.shape
        h = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = h[0], h[1], h[2]
        att = F.softmax(torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(c // self.heads), dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(y)
        x = x + self.fc2(self.act(self.fc1(self.ln2(x))))
        return self.head(x.mean(dim=1))


def with_bn_statistics(model: nn.Module, shape: tuple[int, ...], steps: int = 3) -> nn.Module:
    """Populate BatchNorm running statistics with a few train-mode forwards on random data."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape))
    return model.eval()
