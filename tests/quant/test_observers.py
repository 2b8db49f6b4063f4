"""Observers: streaming, bounded memory, exact histogram growth, method behaviour, merging."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from quant import QuantError, make_observer
from quant.observers import HistogramObserver, KLObserver, MinMaxObserver, MSEObserver, PercentileObserver


def test_minmax_streams_to_global_extremes():
    ob = MinMaxObserver()
    batches = [torch.randn(100) * (i + 1) for i in range(5)]
    for b in batches:
        ob(b)
    allx = torch.cat(batches)
    assert float(ob.min_val) == float(allx.min()) and float(ob.max_val) == float(allx.max())


def test_minmax_per_channel():
    ob = MinMaxObserver(per_channel=True, axis=0)
    w = torch.randn(4, 3, 3, 3)
    ob(w)
    assert torch.equal(ob.max_val, w.reshape(4, -1).max(1).values)


def test_histogram_growth_is_exact():
    torch.manual_seed(1)
    batches = [torch.randn(1000) * s for s in (0.01, 0.3, 5.0, 70.0)]  # range grows three times
    streamed = HistogramObserver(bins=1024)
    for b in batches:
        streamed(b)
    oneshot = HistogramObserver(bins=1024)
    oneshot(torch.cat(batches))
    assert int(streamed.exponent) == int(oneshot.exponent)
    assert torch.equal(streamed.hist, oneshot.hist)
    assert float(streamed.hist.sum()) == 4000


@pytest.mark.parametrize("method", ["minmax", "percentile", "kl", "mse"])
def test_memory_is_flat_in_number_of_batches(method):
    def state_bytes(n_batches: int) -> int:
        ob = make_observer(method)
        for _ in range(n_batches):
            ob(torch.randn(256, 16))
        return sum(t.numel() * t.element_size() for t in ob.state_dict().values())

    assert state_bytes(3) == state_bytes(60)


def test_percentile_clips_tails():
    torch.manual_seed(0)
    x = torch.cat([torch.rand(100_000), torch.tensor([50.0])])
    ob = PercentileObserver(percentile=99.9)
    ob(x)
    lo, hi = ob.clip_range()
    assert float(lo) == pytest.approx(0.0, abs=1e-3)
    assert 0.9 < float(hi) < 1.5


def test_kl_on_smooth_data_clips_little_and_on_outliers_a_lot():
    torch.manual_seed(0)
    gauss = torch.relu(torch.randn(500_000))
    ob = KLObserver()
    ob(gauss)
    assert float(ob.clip_range()[1]) > 0.85 * float(gauss.max())
    spiky = torch.cat([gauss, torch.full((20,), 60.0)])
    ob = KLObserver()
    ob(spiky)
    assert float(ob.clip_range()[1]) < 20.0


def test_mse_beats_minmax_error_on_outliers():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(1_000_000), torch.tensor([20.0])])  # clipping one outlier costs less
    ob = MSEObserver()
    ob(x)
    lo, hi = ob.clip_range()
    assert float(hi) < 10.0 and float(lo) > -10.0


def test_nonfinite_values_name_the_layer():
    ob = make_observer("kl", name="features.3 output")
    with pytest.raises(QuantError, match="features.3 output"):
        ob(torch.tensor([1.0, float("nan")]))
    with pytest.raises(QuantError, match="NaN or inf"):
        make_observer("minmax", name="x")(torch.tensor([float("inf")]))


def test_unknown_method_lists_known_ones():
    with pytest.raises(QuantError, match="percentile"):
        make_observer("entropyy")


def test_bad_percentile():
    with pytest.raises(QuantError):
        PercentileObserver(percentile=120)


def _merge_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(rank)
    obs = [HistogramObserver(bins=512), MinMaxObserver()]
    data = torch.randn(5000) * (1 + 9 * rank)  # ranks see different ranges
    for ob in obs:
        ob(data)
        ob.all_reduce()
    results[rank] = (obs[0].hist.clone(), int(obs[0].exponent), float(obs[1].min_val), float(obs[1].max_val))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_observers_merge_across_ranks_like_one_process():
    results = mp.Manager().dict()
    mp.spawn(_merge_worker, args=(_free_port(), results), nprocs=2, join=True)
    merged = []
    for rank in range(2):
        torch.manual_seed(rank)
        merged.append(torch.randn(5000) * (1 + 9 * rank))
    single = HistogramObserver(bins=512)
    single(torch.cat(merged))
    for rank in range(2):
        hist, exponent, lo, hi = results[rank]
        assert exponent == int(single.exponent)
        assert torch.equal(hist, single.hist)
        assert lo == float(torch.cat(merged).min()) and hi == float(torch.cat(merged).max())
