"""Fixtures of the runtime tests."""

from pathlib import Path

import pytest
from onnx_builders import export_fp32


@pytest.fixture(scope="session")
def small_cnn_fp32(tmp_path_factory) -> Path:
    """A tiny conv net with every op the integer path folds: Conv(+ReLU/ReLU6), depthwise
    and grouped Conv, residual Add, MaxPool, Concat, AveragePool, GAP, Flatten, Gemm."""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.ReLU6())
            self.group = nn.Conv2d(16, 16, 3, 1, 1, groups=4)
            self.pw = nn.Conv2d(32, 24, 1)
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.avg = nn.AvgPool2d(2)
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            x = self.stem(x)
            y = self.dw(x) + x
            z = torch.cat([y, self.group(y)], 1)
            z = self.avg(self.pool(torch.relu(self.pw(z))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(z, 1), 1))

    torch.manual_seed(0)
    return export_fp32(Net(), tmp_path_factory.mktemp("cnn") / "small_cnn.onnx", (1, 3, 32, 32))
