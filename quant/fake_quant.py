"""FakeQuantize: an observer plus the quantize-dequantize it implies.

Calibration runs with observation on and quantization off (statistics of the float
model); ``freeze`` turns statistics into scale/zero point; afterwards the module
simulates int8 exactly (DESIGN.md §3). QAT keeps both on, recomputing qparams each
step until the observer is frozen. Flags are buffers so they travel with state_dict
and DDP broadcasts.
"""

from __future__ import annotations

import torch
from torch import nn

from quant.errors import QuantError
from quant.observers import MinMaxObserver, Observer
from quant.spec import QuantSpec, fake_quantize, qparams


class FakeQuantize(nn.Module):
    """Quantize-dequantize one tensor per ``spec``; ``name`` is the layer it serves."""

    def __init__(self, spec: QuantSpec, observer: Observer, name: str = "", learnable: bool = False) -> None:
        super().__init__()
        self.spec = spec
        self.observer = observer
        self.name = name
        observer.name = name
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("observe_enabled", torch.tensor(1, dtype=torch.uint8))
        self.register_buffer("quant_enabled", torch.tensor(0, dtype=torch.uint8))
        self.learnable = learnable
        if learnable:  # LSQ: the scale itself is trained; the buffer mirrors it for export
            self.log_scale = nn.Parameter(torch.zeros(()))

    @property
    def axis(self) -> int | None:
        return self.spec.axis if self.spec.per_channel else None

    def forward(self, x: torch.Tensor, observe: bool = True) -> torch.Tensor:
        """``observe=False`` reuses this quantizer's grid without recording (pass-through requantize).

        While quantizing (QAT), statistics are recorded in training mode only: an eval
        forward must be the deterministic int8 model that export writes, not move its scales.
        """
        if observe and self.observe_enabled and (self.training or not self.quant_enabled):
            self.observer(x)
            if self.quant_enabled:
                self.compute_qparams(check_zero_range=False)
                if self.learnable:  # LSQ: observation only initialises the scale, training moves it
                    self.observe_enabled.fill_(0)
        if not self.quant_enabled:
            return x
        if self.learnable:
            return _lsq(x, self.log_scale, self.zero_point, self.spec, self.scale)
        return fake_quantize(x, self.scale, self.zero_point, self.spec, self.axis)

    @torch.no_grad()
    def compute_qparams(self, check_zero_range: bool = True) -> None:
        """Turn the observer's clip range into scale and zero point."""
        if not self.observer.seen:
            raise QuantError(
                f"the quantizer of '{self.name}' saw no data: is the layer unused in forward, "
                "or was the calibration loader empty?"
            )
        lo, hi = self.observer.clip_range()
        if check_zero_range and not self.spec.per_channel and float(hi) <= float(lo):
            raise QuantError(
                f"the activation at '{self.name}' has zero range (every value is {float(lo):g}) "
                "over the calibration data: a constant tensor cannot be calibrated; "
                "use more varied data or pass on_zero_range='warn'"
            )
        scale, zp = qparams(lo, hi, self.spec)
        self.scale = scale.to(self.scale.device)  # histogram searches run on the CPU
        self.zero_point = zp.to(self.zero_point.device)
        if self.learnable:
            self.log_scale.data = scale.log().reshape(())  # learnable scales are per tensor

    def train(self, mode: bool = True) -> FakeQuantize:
        """Entering eval mirrors a learned (LSQ) scale into ``scale``, the buffer exporters read."""
        super().train(mode)
        if not mode and self.learnable:
            with torch.no_grad():
                self.scale.copy_(self.log_scale.detach().exp().reshape(self.scale.shape))
        return self

    def enable(self, *, observe: bool, quant: bool) -> None:
        self.observe_enabled.fill_(int(observe))
        self.quant_enabled.fill_(int(quant))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, spec={self.spec}"


class _LSQGrad(torch.autograd.Function):
    """LSQ (Esser et al. 2020): STE for x, and d x̂/d s with the 1/sqrt(N·qmax) grad scale."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin: int, qmax: int):  # type: ignore[override]
        v = x / scale
        q = torch.round(v) + zp
        inside = (q >= qmin) & (q <= qmax)
        qc = torch.clamp(q, qmin, qmax)
        ctx.save_for_backward(v, qc - zp, inside)
        ctx.g = 1.0 / float((x.numel() * max(qmax, 1)) ** 0.5)
        return (qc - zp) * scale

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        v, qz, inside = ctx.saved_tensors
        # inside: d/ds = round(v) - v ; outside: the clipped code (q - z)
        ds = torch.where(inside, torch.round(v) - v, qz)
        gs = (grad * ds).sum() * ctx.g
        return grad * inside, gs, None, None, None


def _lsq(x, log_scale, zp, spec: QuantSpec, mirror: torch.Tensor) -> torch.Tensor:
    scale = log_scale.exp()
    with torch.no_grad():
        mirror.copy_(scale.detach().reshape(mirror.shape))
    return _LSQGrad.apply(x, scale, zp.to(x.dtype), spec.qmin, spec.qmax)


class WeightFakeQuantize(FakeQuantize):
    """Weights: exact min/max of the *current* weight per output channel (or tensor).

    Weights change during QAT, so a running min/max would remember stale extremes;
    while observing, each call measures the weight afresh. Channels whose weights are
    all zero (pruned filters) get a finite scale and quantize exactly to zero.
    """

    def __init__(self, spec: QuantSpec, name: str) -> None:
        super().__init__(spec, MinMaxObserver(name=name, per_channel=spec.per_channel, axis=spec.axis), name)

    @torch.no_grad()
    def observe_fresh(self, w: torch.Tensor) -> None:
        """Forget earlier weights and take qparams from ``w`` alone."""
        self.observer.min_val = torch.full_like(self.observer.min_val, float("inf"))
        self.observer.max_val = torch.full_like(self.observer.max_val, float("-inf"))
        self.observer(w)
        self.compute_qparams(check_zero_range=False)

    def forward(self, w: torch.Tensor, observe: bool = True) -> torch.Tensor:
        if observe and self.observe_enabled:
            self.observe_fresh(w)
        if not self.quant_enabled:
            return w
        return fake_quantize(w, self.scale, self.zero_point, self.spec, self.axis)
