"""QLinearGlobalAveragePool on its own: the exact integer sum requantized once, in either layout."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.graph import MS_DOMAIN, Graph, Node, ValueInfo
from runtime.ops.qlinear_pool import qlinear_global_average_pool


def reference(x: np.ndarray, axes: tuple[int, int], sx, zx, sy, zy) -> np.ndarray:
    """The docstring's formula in int64 and numpy: rne((sum - n*z_x) * fp32(s_x / (s_y * n))) + z_y."""
    n = x.shape[axes[0]] * x.shape[axes[1]]
    acc = x.astype(np.int64).sum(axis=axes, keepdims=True) - n * int(zx)
    scale = np.float32(sx) / (np.float32(sy) * np.float32(n))
    lo, hi = np.iinfo(zy.dtype).min, np.iinfo(zy.dtype).max
    return np.clip(np.rint(acc.astype(np.float32) * scale) + int(zy), lo, hi).astype(zy.dtype)


@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("shape", [(1, 7, 7, 1280), (3, 5, 1, 17), (2, 1, 1, 4)])
def test_global_average_pool_sums_exactly_in_either_layout(channels_last, dtype, shape):
    rng = np.random.default_rng(len(shape) + shape[-1])
    info = np.iinfo(dtype)
    consts = {
        "sx": np.float32(0.031),
        "zx": np.array(rng.integers(info.min, info.max + 1), dtype),
        "sy": np.float32(0.017),
        "zy": np.array(rng.integers(info.min, info.max + 1), dtype),
    }
    node = Node("QLinearGlobalAveragePool", "gap", ["x", "sx", "zx", "sy", "zy"], ["y"],
                {"channels_last": channels_last}, MS_DOMAIN)
    graph = Graph([node], consts, [ValueInfo("x", list(shape), "tensor(uint8)")], [ValueInfo("y", [], "")])
    run = qlinear_global_average_pool(node, graph, None)
    x = rng.integers(info.min, info.max + 1, shape, dtype=dtype)
    if not channels_last:
        x = np.ascontiguousarray(np.moveaxis(x, 3, 1))
    axes = (1, 2) if channels_last else (2, 3)
    (got,) = run(x, *(consts[k] for k in ("sx", "zx", "sy", "zy")))
    expected = reference(x, axes, consts["sx"], consts["zx"], consts["sy"], consts["zy"])
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
