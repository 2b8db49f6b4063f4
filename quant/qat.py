"""Quantization-aware training pieces: Conv-BN folded on the fly, synchronised observers, schedules.

Three things change between PTQ and QAT (DESIGN.md §5):

* Conv→BatchNorm pairs are not folded once: :class:`QuantConvBn2d` keeps the BN and
  folds it at every step (Jacob et al. 2018, "simulated BN folding", as torch.ao's
  ConvBn does): the weight is quantized *folded with the running statistics*, the
  convolution output is un-scaled and normalised with the *batch* statistics, so the
  gradient sees batch normalisation while the weight sees the grid it will be
  exported on. After ``freeze_bn_after`` training steps (and always in eval mode) the
  module computes exactly the folded int8 graph the exporter writes.
* Activation observers are moving-average min/max whose batch extremes are reduced
  across torch.distributed ranks *inside* the step (:class:`QATObserver`), and BN
  running statistics are updated from the global batch statistics: every rank holds
  bit-identical scales and statistics after every step, whatever DDP's
  ``broadcast_buffers`` says, so freezing needs no collective and cannot deadlock.
* Schedules are counted by the modules themselves (observer updates, BN training
  steps), so they survive deepcopy, ``state_dict`` round trips and DDP wrapping; a
  "step" is one training-mode forward pass.

Weight quantizers are not scheduled: their range is a pure function of the current
weight (identical on every rank), so freezing it would only let weights drift past a
stale range.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import fx, nn

from quant.errors import QuantError
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.fuse import activation_of, is_module, set_module, sole_user
from quant.modules import QuantConv2d, _apply_act
from quant.observers import MovingAverageMinMaxObserver, _distributed
from quant.spec import QuantSpec

NEVER = -1  # stored in schedule buffers for "do not freeze"


def _after(steps: int | None) -> torch.Tensor:
    if steps is not None and steps < 0:
        raise QuantError(f"a freeze step count must be ≥ 0 or None (never), got {steps}")
    return torch.tensor(NEVER if steps is None else int(steps), dtype=torch.int64)


class QATObserver(MovingAverageMinMaxObserver):
    """Moving-average min/max of the *global* batch, frozen after ``freeze_after`` updates.

    Each batch's min and max are all-reduced (MIN/MAX) before entering the average, so
    all ranks average the same numbers and hold identical ranges at every step.
    """

    def __init__(
        self, name: str = "", averaging_constant: float = 0.01, freeze_after: int | None = None
    ) -> None:
        super().__init__(name, averaging_constant=averaging_constant)
        self.register_buffer("updates", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("freeze_after", _after(freeze_after))

    @property
    def frozen(self) -> bool:
        return 0 <= int(self.freeze_after) <= int(self.updates)

    def freeze(self) -> None:
        """Stop updating from now on (the range seen so far is kept)."""
        self.freeze_after.fill_(int(self.updates))

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = super()._batch_range(x)
        if _distributed():
            lo, hi = lo.clone(), hi.clone()
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return lo, hi

    def update(self, x: torch.Tensor) -> None:
        if self.frozen:
            return
        super().update(x)
        self.updates += 1

    def all_reduce(self) -> None:
        """Nothing to merge: ranges are reduced every step and identical on every rank."""

    @classmethod
    def starting_from(cls, lo: torch.Tensor, hi: torch.Tensor, **kwargs) -> QATObserver:
        """An observer whose average starts at a calibrated range [lo, hi]."""
        obs = cls(**kwargs)
        obs.min_val = lo.detach().clone().float()
        obs.max_val = hi.detach().clone().float()
        return obs


class QuantConvBn2d(QuantConv2d):
    """Conv2d→BatchNorm2d(→ReLU) that trains the BN and folds it on the fly.

    Training, BN not frozen: ``w_q = fq(w·γ/σ_run)``, ``y = BN_batch(conv(x, w_q)·σ_run/γ + b)``;
    the BN's running statistics update from the global batch (all ranks).
    Frozen or eval: the inherited QuantConv2d forward on :meth:`effective_weight` /
    :meth:`effective_bias` (running-statistics folding, int32 bias) — the int8 graph.
    """

    def __init__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d, weight_spec: QuantSpec, act: str | None = None,
        name: str = "", freeze_bn_after: int | None = None,
    ) -> None:
        super().__init__(conv, weight_spec, act, name)
        if bn.running_mean is None or bn.running_var is None:
            raise QuantError(f"'{name}': its BatchNorm has no running statistics "
                             "(track_running_stats=False), so it cannot be folded into an int8 convolution")
        if bn.num_features != conv.out_channels:
            raise QuantError(f"'{name}': BatchNorm has {bn.num_features} features, conv {conv.out_channels}")
        self.bn = bn
        self.register_buffer("bn_steps", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("freeze_bn_after", _after(freeze_bn_after))
        self.train(bn.training)  # a module built during preparation must not update statistics

    @property
    def bn_frozen(self) -> bool:
        return 0 <= int(self.freeze_bn_after) <= int(self.bn_steps)

    def freeze_bn(self) -> None:
        """Stop updating BN statistics; training now runs the folded int8 graph itself."""
        self.freeze_bn_after.fill_(int(self.bn_steps))

    def _gamma_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        rv = self.bn.running_var
        gamma = self.bn.weight if self.bn.weight is not None else torch.ones_like(rv)
        beta = self.bn.bias if self.bn.bias is not None else torch.zeros_like(rv)
        return gamma, beta

    def _factor(self) -> torch.Tensor:
        """γ/σ_running per output channel (carries the gradient to γ)."""
        gamma, _ = self._gamma_beta()
        return gamma * torch.rsqrt(self.bn.running_var + self.bn.eps)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self._factor().reshape(-1, 1, 1, 1)

    def effective_bias(self) -> torch.Tensor:
        _, beta = self._gamma_beta()
        bias = self.bias if self.bias is not None else torch.zeros_like(beta)
        return (bias - self.bn.running_mean) * self._factor() + beta

    def forward(
        self, x: torch.Tensor, input_scale: torch.Tensor | None = None, output_scale: torch.Tensor | None = None,
        output_zero_point: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if not self.training or self.bn_frozen:
            return super().forward(x, input_scale, output_scale, output_zero_point)
        self.bn_steps += 1
        return _apply_act(self._batch_norm_forward(x), self.act)

    def _batch_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self._factor()
        y = F.conv2d(x, self.quantized_weight(), None, self.stride, self.padding, self.dilation, self.groups)
        # undo the folding factor so BN sees conv(x, w); γ = 0 channels have a zero weight and stay 0
        safe = torch.where(factor != 0, factor, torch.ones_like(factor))
        y = y / safe.reshape(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        mean = y.mean((0, 2, 3))
        var = y.var((0, 2, 3), unbiased=False)
        self._update_running_stats(y.detach(), mean.detach(), var.detach())
        gamma, beta = self._gamma_beta()
        scale = gamma * torch.rsqrt(var + self.bn.eps)
        return (y - mean.reshape(1, -1, 1, 1)) * scale.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1)

    @torch.no_grad()
    def _update_running_stats(self, y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
        """BatchNorm's running update, from the batch of all ranks together (as SyncBN would)."""
        n = y.numel() // y.shape[1]
        if _distributed():  # counts, sums and sums of squares add up exactly across ranks
            stats = torch.cat([torch.tensor([float(n)], dtype=torch.float64, device=y.device),
                               (mean.double() * n), (var.double() + mean.double() ** 2) * n])
            dist.all_reduce(stats)
            c = mean.numel()
            n_all = stats[0]
            mean = (stats[1:1 + c] / n_all).to(mean.dtype)
            var = (stats[1 + c:] / n_all - (stats[1:1 + c] / n_all) ** 2).clamp_min(0).to(var.dtype)
            n = int(n_all)
        bn = self.bn
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked += 1
        m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        unbiased = var * n / max(n - 1, 1)
        bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
        bn.running_var.mul_(1 - m).add_(unbiased, alpha=m)


def swap_conv_bn(gm: fx.GraphModule, weight_spec: QuantSpec, skip: frozenset[str] = frozenset()) -> None:
    """Conv2d→BatchNorm2d(→ReLU/ReLU6) chains (each the previous one's sole user) → QuantConvBn2d."""
    modules = dict(gm.named_modules())
    uses: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            uses[node.target] = uses.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if not is_module(node, modules, nn.Conv2d) or node.target in skip:
            continue
        bn_node = sole_user(node)
        if bn_node is None or not is_module(bn_node, modules, nn.BatchNorm2d) or uses[bn_node.target] != 1:
            continue
        name = str(node.target)
        act_node = sole_user(bn_node)
        act = activation_of(act_node, modules) if act_node is not None else None
        fused = QuantConvBn2d(modules[name], modules[bn_node.target], weight_spec, act, name)
        for n in ((act_node,) if act is not None else ()) + (bn_node,):
            n.replace_all_uses_with(node)
            gm.graph.erase_node(n)
        set_module(gm, name, fused)
        parent, _, leaf = str(bn_node.target).rpartition(".")
        delattr(gm.get_submodule(parent) if parent else gm, leaf)  # the BN now lives inside `fused`
    gm.graph.lint()


# --- turning QAT on, and the schedules ---------------------------------------------------
def activation_quantizers(model: nn.Module):
    """Every FakeQuantize that quantizes an activation (not a weight)."""
    return (m for m in model.modules()
            if isinstance(m, FakeQuantize) and not isinstance(m, WeightFakeQuantize))


@torch.no_grad()
def observers_from_calibration(
    model: nn.Module, *, averaging_constant: float = 0.01, freeze_after: int | None = None
) -> None:
    """Replace each calibrated activation observer by a QATObserver starting at its clip range."""
    for fq in activation_quantizers(model):
        lo, hi = fq.observer.clip_range()
        obs = QATObserver.starting_from(lo, hi, name=fq.name, averaging_constant=averaging_constant,
                                        freeze_after=freeze_after)
        fq.observer = obs.to(fq.scale.device)


def start_qat(model: nn.Module, *, freeze_bn_after: int | None = None) -> None:
    """Fake-quant on everywhere, observers on (LSQ scales already initialised: off), BN schedule set."""
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            initialised = m.observer.seen and not isinstance(m, WeightFakeQuantize)
            m.enable(observe=not (m.learnable and initialised), quant=True)
        elif isinstance(m, QuantConvBn2d):
            m.freeze_bn_after.copy_(_after(freeze_bn_after))
            m.bn_steps.zero_()


def freeze_observers(model: nn.Module) -> None:
    """Fix every activation range now (manual alternative to ``freeze_observers_after``)."""
    for fq in activation_quantizers(model):
        if isinstance(fq.observer, QATObserver):
            fq.observer.freeze()
        else:
            fq.enable(observe=False, quant=bool(fq.quant_enabled))


def freeze_bn_stats(model: nn.Module) -> None:
    """Fix every folded BN's statistics now (manual alternative to ``freeze_bn_after``)."""
    for m in model.modules():
        if isinstance(m, QuantConvBn2d):
            m.freeze_bn()
