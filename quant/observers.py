"""Calibration observers: streaming statistics → a clip range [lo, hi].

Each method is one class with one job (DESIGN.md §4). All hold O(bins) memory per
tensor no matter how many batches pass, and merge across torch.distributed ranks
with all-reduces, so calibration gives the same result under torchrun.

Histograms cover ``[-2^k, 2^k]`` with a fixed number of bins. When a batch exceeds
the range, ``k`` grows and every old bin folds exactly into one new bin (the range
doubles, bins pair up), so growing and merging across ranks lose nothing.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from quant.errors import QuantError


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class Observer(nn.Module):
    """Base: ``forward`` records a batch and returns it unchanged."""

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name = name  # the layer this observer watches, for error messages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise QuantError(
                f"non-finite values (NaN or inf) reach the quantizer of '{self.name or '?'}' during calibration"
            )
        if x.numel():
            self.update(x)
        return x

    def update(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    @property
    def seen(self) -> bool:
        raise NotImplementedError

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen [lo, hi] (tensors, per channel where the observer is)."""
        raise NotImplementedError

    def all_reduce(self) -> None:
        """Merge statistics across ranks (no-op outside torch.distributed)."""


class MinMaxObserver(Observer):
    """Running min/max, per tensor or per channel along ``axis``."""

    def __init__(self, name: str = "", per_channel: bool = False, axis: int = 0) -> None:
        super().__init__(name)
        self.per_channel = per_channel
        self.axis = axis
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.per_channel:
            return x.min(), x.max()
        flat = x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)
        return flat.min(1).values, flat.max(1).values

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x.float())
        if self.min_val.shape != lo.shape:  # first per-channel batch sets the shape
            self.min_val = torch.full_like(lo, float("inf"))
            self.max_val = torch.full_like(hi, float("-inf"))
        self.min_val = torch.minimum(self.min_val, lo)
        self.max_val = torch.maximum(self.max_val, hi)

    @property
    def seen(self) -> bool:
        return bool(torch.isfinite(self.min_val).all())

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val

    def all_reduce(self) -> None:
        if _distributed():
            dist.all_reduce(self.min_val, op=dist.ReduceOp.MIN)
            dist.all_reduce(self.max_val, op=dist.ReduceOp.MAX)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of batch min/max: the QAT default, robust to one odd batch."""

    def __init__(self, name: str = "", averaging_constant: float = 0.01, **kw) -> None:
        super().__init__(name, **kw)
        self.c = averaging_constant

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x.float())
        if not self.seen:
            self.min_val, self.max_val = lo.clone(), hi.clone()
        else:
            self.min_val = self.min_val + self.c * (lo - self.min_val)
            self.max_val = self.max_val + self.c * (hi - self.max_val)

    def all_reduce(self) -> None:
        if _distributed():  # ranks saw different batches: average their running estimates
            world = dist.get_world_size()
            for t in (self.min_val, self.max_val):
                dist.all_reduce(t)
                t /= world


class HistogramObserver(Observer):
    """Streaming histogram over [-2^k, 2^k]; subclasses choose the range from it."""

    def __init__(self, name: str = "", bins: int = 8192, unsigned_levels: int = 256) -> None:
        super().__init__(name)
        if bins < 256 or bins % 2 or bins & (bins - 1):
            raise QuantError(f"histogram bins must be a power of two ≥ 256, got {bins}")
        self.bins = bins
        self.levels = unsigned_levels
        self.register_buffer("hist", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("exponent", torch.tensor(-1000, dtype=torch.int64))  # -1000: nothing seen
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        # exact zeros (ReLU outputs, padding) and values equal to the running minimum
        # (a constant background) counted apart: such point masses are exact on the grid
        self.register_buffer("zeros", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("at_min", torch.tensor(0.0, dtype=torch.float64))

    @property
    def seen(self) -> bool:
        return bool(torch.isfinite(self.min_val))

    @property
    def bound(self) -> float:
        return math.ldexp(1.0, int(self.exponent))

    def _grow(self, new_exp: int) -> None:
        """Widen the range to 2^new_exp; each old bin lands wholly in one new bin."""
        old = int(self.exponent)
        if old == -1000 or not bool(self.hist.any()):
            self.exponent.fill_(new_exp)
            return
        if new_exp <= old:
            return
        f = 2 ** (new_exp - old)
        half = self.bins // 2
        j = torch.arange(self.bins, device=self.hist.device)
        target = torch.div((f - 1) * half + j, f, rounding_mode="floor").clamp_(0, self.bins - 1)
        self.hist = torch.zeros_like(self.hist).index_add_(0, target, self.hist)
        self.exponent.fill_(new_exp)

    def update(self, x: torch.Tensor) -> None:
        x = x.float()
        lo, hi = x.min(), x.max()
        amax = float(torch.maximum(-lo, hi))
        n_lo = float((x == lo).sum())
        if float(lo) < float(self.min_val):
            self.at_min.fill_(n_lo)
        elif float(lo) == float(self.min_val):
            self.at_min += n_lo
        self.min_val = torch.minimum(self.min_val, lo)
        self.max_val = torch.maximum(self.max_val, hi)
        self.zeros += float((x == 0).sum())
        if amax == 0.0:
            self.hist[self.bins // 2] += x.numel()
            return
        needed = max(math.frexp(amax)[1], -126)  # 2^needed > amax
        if needed > int(self.exponent):
            self._grow(needed)
        # bin = floor(x·half/2^k) + half: scaling by a power of two is exact in float, so a
        # value's bin at range 2^(k+1) is exactly its bin at 2^k halved (growth stays exact)
        half = self.bins // 2
        idx = torch.floor(x * math.ldexp(half, -int(self.exponent))).long() + half
        self.hist += torch.bincount(idx.clamp_(0, self.bins - 1).flatten(), minlength=self.bins).double()

    def all_reduce(self) -> None:
        if not _distributed():
            return
        e = self.exponent.clone()
        dist.all_reduce(e, op=dist.ReduceOp.MAX)
        self._grow(int(e))
        dist.all_reduce(self.hist)
        dist.all_reduce(self.zeros)
        dist.all_reduce(self.min_val, op=dist.ReduceOp.MIN)
        dist.all_reduce(self.max_val, op=dist.ReduceOp.MAX)

    # helpers for subclasses -------------------------------------------------
    @property
    def cpu_hist(self) -> torch.Tensor:
        """The counts on the CPU: range searches are small and index with CPU tensors."""
        return self.hist.detach().cpu()

    def edges(self) -> torch.Tensor:
        b = self.bound
        return torch.linspace(-b, b, self.bins + 1, dtype=torch.float64)

    def centers(self) -> torch.Tensor:
        e = self.edges()
        return (e[:-1] + e[1:]) / 2

    def _clip_to_seen(self, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        lo_t = torch.tensor(max(lo, float(self.min_val)))
        hi_t = torch.tensor(min(hi, float(self.max_val)))
        return lo_t, hi_t

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.min_val, self.max_val


class PercentileObserver(HistogramObserver):
    """Clip at the ``percentile`` (e.g. 99.99) of the distribution, on both tails."""

    def __init__(self, name: str = "", percentile: float = 99.99, **kw) -> None:
        super().__init__(name, **kw)
        if not 50.0 < percentile <= 100.0:
            raise QuantError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        cdf = torch.cumsum(self.cpu_hist, 0)
        total = float(cdf[-1])
        edges = self.edges()
        q = self.percentile / 100.0
        hi_idx = int(torch.searchsorted(cdf, torch.tensor(q * total, dtype=torch.float64)))
        lo_idx = int(torch.searchsorted(cdf, torch.tensor((1 - q) * total, dtype=torch.float64)))
        hi = float(edges[min(hi_idx + 1, self.bins)])
        lo = float(edges[lo_idx])
        return self._clip_to_seen(lo, hi)


class MSEObserver(HistogramObserver):
    """Pick the clip range that minimises the expected squared quantization error.

    The error of a candidate [lo, hi] is computed from the histogram (bin centres
    weighted by counts), rounding and clipping both. lo and hi are searched by
    coordinate descent over shrink factors of [min, max]: a tail on one side must
    not force clipping on the other.
    """

    def __init__(self, name: str = "", candidates: int = 100, rounds: int = 2, **kw) -> None:
        super().__init__(name, **kw)
        self.candidates = candidates
        self.rounds = rounds

    def _errors(self, lo: torch.Tensor, hi: torch.Tensor, c: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        steps = self.levels - 1
        scale = ((hi - lo) / steps).clamp_min(1e-30)
        zp = torch.round(-lo / scale)
        q = torch.clamp(torch.round(c[None, :] / scale[:, None]) + zp[:, None], 0, steps)
        return (((q - zp[:, None]) * scale[:, None] - c[None, :]) ** 2 * h[None, :]).sum(1)

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo0, hi0 = min(float(self.min_val), 0.0), max(float(self.max_val), 0.0)
        mask = self.cpu_hist > 0
        c, h = self.centers()[mask], self.cpu_hist[mask]
        alphas = torch.linspace(1.0 / self.candidates, 1.0, self.candidates, dtype=torch.float64)
        lo, hi = lo0, hi0
        for _ in range(self.rounds):
            his = hi0 * alphas
            hi = float(his[torch.argmin(self._errors(torch.full_like(his, lo), his, c, h))])
            los = lo0 * alphas
            lo = float(los[torch.argmin(self._errors(los, torch.full_like(los, hi), c, h))])
        return torch.tensor(lo), torch.tensor(hi)


class KLObserver(HistogramObserver):
    """TensorRT-style entropy calibration.

    For each candidate threshold T, compare the clipped reference distribution P
    (outliers added to the last bin) with Q: P merged into ``levels`` quantization bins
    and expanded back over P's non-empty bins; keep the T with the smallest KL(P‖Q).

    - symmetric (int8) activations: as TensorRT, on |x| with 128 levels; range [-T, T];
    - asymmetric (uint8) activations: all 256 levels; the upper end is searched on
      x − lo with the grid anchored at lo = min(min, 0), then (for signed data) the lower
      end on hi − x anchored at that upper end. For ReLU outputs (lo = 0) this is
      TensorRT's search on [0, T].

    The point mass at the grid's lower end (ReLU zeros, a constant background) is
    exact on every grid and is left out, as is structure finer than one level of the
    widest candidate (see ``_smooth``); both would otherwise drag T to the first
    candidate on discrete data such as 8-bit images.
    """

    def __init__(
        self, name: str = "", stride: int = 8, symmetric: bool = False, min_kept: float = 0.95, **kw
    ) -> None:
        super().__init__(name, **kw)
        if not 0.0 < min_kept <= 1.0:
            raise QuantError(f"min_kept must be in (0, 1], got {min_kept}")
        self.stride = stride
        self.symmetric = symmetric
        self.min_kept = min_kept

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.bins // 2
        width = self.bound / half
        if self.symmetric:
            h = self.cpu_hist[half:] + self.cpu_hist[:half].flip(0)
            h[0] = (h[0] - self.zeros).clamp_min(0)
            t = self._search(h, self.levels // 2) * width
            return self._clip_to_seen(-t, t)
        # upper end, with the grid anchored at lo = min(min, 0)
        lo = min(float(self.min_val), 0.0)
        first = min(int(math.floor(lo / width)) + half, self.bins - 1)
        h = self.cpu_hist[first:].clone()
        h[0] = (h[0] - (self.zeros if lo == 0.0 else self.at_min)).clamp_min(0)
        hi = (first - half + self._search(h, self.levels)) * width
        if lo < 0.0:  # then the lower end, with the grid anchored at hi
            top = max(min(int(math.ceil(hi / width)) + half, self.bins), 1)
            lo = (top - half - self._search(self.cpu_hist[:top].flip(0), self.levels)) * width
        return self._clip_to_seen(lo, hi)

    def _search(self, h: torch.Tensor, levels: int) -> int:
        """Number of bins from ``h``'s origin to the threshold with the least KL."""
        nz = torch.nonzero(h)
        last = int(nz[-1]) + 1 if len(nz) else 1
        if last <= levels:  # fewer occupied bins than levels: no clipping can help
            return last
        h = _smooth(h, last // levels)
        # Candidates keep at least `min_kept` of the mass: KL calibration models rare
        # outliers, and thresholds that clip more only win on sparse or spiky histograms
        # (a candidate window holding almost no data has P and Q alike, hence small KL).
        cum = torch.cumsum(h, 0)
        start = max(levels, int(torch.searchsorted(cum, self.min_kept * cum[-1])) + 1)
        best_i, best_kl = last, float("inf")
        for i in range(start, last + 1, self.stride):
            kl = _kl_for_threshold(h, i, levels)
            if kl < best_kl:
                best_kl, best_i = kl, i
        return best_i


def _smooth(hist: torch.Tensor, window: int) -> torch.Tensor:
    """Moving average over ``window`` bins (mass-preserving up to the edges).

    KL's model of quantization spreads each level's mass evenly over its bins, so any
    structure finer than a level is charged as loss. Discrete data (8-bit images and
    the first layers that see them, constant backgrounds, padding) is all spikes at
    the histogram's resolution, and unsmoothed KL then clips to the first candidate
    (measured: 35% top-1 on the MNIST CNN). Smoothing at the width of one level of
    the widest candidate keeps the comparison to what int8 can resolve at all.
    """
    if window <= 1:
        return hist
    window |= 1  # odd, so the filter is centred
    kernel = torch.ones(1, 1, window, dtype=hist.dtype) / window
    return torch.nn.functional.conv1d(hist[None, None], kernel, padding=window // 2)[0, 0]


def _kl_for_threshold(hist: torch.Tensor, i: int, levels: int) -> float:
    """KL(P‖Q) for clipping the |x| histogram at bin ``i`` with ``levels`` quantized bins."""
    p = hist[:i].clone()
    p[i - 1] += hist[i:].sum()
    src = hist[:i]
    nonzero = src > 0
    # merge i bins into `levels` groups (group index for each bin), then spread each
    # group's mass evenly over its non-empty bins
    group = torch.div(torch.arange(i) * levels, i, rounding_mode="floor")
    mass = torch.zeros(levels, dtype=torch.float64).index_add_(0, group, src)
    count = torch.zeros(levels, dtype=torch.float64).index_add_(0, group, nonzero.double())
    q = torch.where(nonzero, mass[group] / count[group].clamp_min(1), torch.zeros_like(src))
    ps, qs = p.sum(), q.sum()
    if ps <= 0 or qs <= 0:
        return float("inf")
    p, q = p / ps, q / qs
    m = p > 0
    eps = 1e-12
    return float((p[m] * torch.log(p[m] / (q[m] + eps))).sum())


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "kl": KLObserver,
    "entropy": KLObserver,
    "mse": MSEObserver,
}


def make_observer(method: str, name: str = "", **kwargs) -> Observer:
    """Build an activation observer by method name; unknown names list the known ones."""
    try:
        cls = OBSERVERS[method]
    except KeyError:
        raise QuantError(f"unknown calibration method '{method}'; choose one of {sorted(OBSERVERS)}") from None
    return cls(name=name, **kwargs)
