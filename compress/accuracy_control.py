"""Accuracy-aware PTQ: ``compress.quantize(..., eval_fn=..., max_drop=...)``.

Like NNCF's ``quantize_with_accuracy_control``: quantize everything; if the user's metric
falls more than ``max_drop`` below fp32, rank the Conv/Linear layers by sensitivity and keep
the fewest of them in float that bring the metric back within the bound.  Sensitivity is
measured one of two ways: ``ranking="metric"`` quantizes the model once per layer with
that layer alone left float and evaluates it (exact, one evaluation per layer), ``"sqnr"``
ranks by the signal-to-quantization-noise ratio of each layer's weights under the chosen
weight spec (free, weights only).  Layers are then kept float in rank order, one more each
round, until the bound holds.  The report says what was kept and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compress.errors import QuantizationError

RANKINGS = ("metric", "sqnr")


@dataclass
class LayerRow:
    name: str
    score: float  # metric with this layer float (ranking="metric") or weight SQNR in dB ("sqnr")
    kept_float: bool = False


@dataclass
class AccuracyReport:
    """What the accuracy-aware search measured and decided."""

    fp32: float
    quantized: float
    final: float
    max_drop: float
    ranking: str
    layers: list[LayerRow] = field(default_factory=list)

    @property
    def kept_float(self) -> list[str]:
        return [r.name for r in self.layers if r.kept_float]

    def markdown(self) -> str:
        unit = "metric with the layer float" if self.ranking == "metric" else "weight SQNR (dB)"
        rows = [f"fp32 {self.fp32:.4f}, all quantized {self.quantized:.4f}, final {self.final:.4f} "
                f"(bound: drop <= {self.max_drop})", "", f"| layer | {unit} | kept float |", "|---|---:|---|"]
        rows += [f"| {r.name} | {r.score:.4f} | {'yes' if r.kept_float else ''} |" for r in self.layers]
        return "\n".join(rows)


def candidate_layers(model: nn.Module, skip: Iterable[str]) -> list[str]:
    skip = set(skip)
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in skip]


def weight_sqnr(module: nn.Module, bits: int, per_channel: bool, weight_range: str) -> float:
    """SQNR (dB) of the module's weights after the symmetric quantization compress.quantize applies."""
    from compress.ptq import weight_spec
    from quant.spec import qparams, quantize_int

    spec = weight_spec(per_channel, bits, weight_range)
    w = module.weight.detach().float()
    flat = w.reshape(w.shape[0], -1) if spec.per_channel else w.reshape(1, -1)
    amax = flat.abs().amax(1)
    scale, zero = qparams(-amax, amax, spec)
    wq = (quantize_int(flat, scale, zero, spec, axis=0).float() - zero[:, None].float()) * scale[:, None]
    noise = float(((flat - wq) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((flat**2).sum()) / noise)


def quantize_with_accuracy_control(
    model: nn.Module,
    calib_loader: Iterable,
    *,
    eval_fn: Callable[[nn.Module], float] | None,
    max_drop: float | None,
    ranking: str = "metric",
    **options: Any,
) -> nn.Module:
    """A quantized model whose ``eval_fn`` is at most ``max_drop`` below the float model's, with
    the fewest layers kept float; ``qmodel.accuracy_report`` holds the :class:`AccuracyReport`.

    ``eval_fn(model) -> float`` (higher is better) is called on the float model, the fully
    quantized one and each candidate; ``options`` are compress.quantize's keyword arguments."""
    from compress.ptq import quantize

    if eval_fn is None or max_drop is None:
        raise QuantizationError("accuracy control needs both eval_fn and max_drop")
    if not (isinstance(max_drop, (int, float)) and max_drop >= 0):
        raise QuantizationError(f"max_drop must be a number >= 0, got {max_drop!r}")
    if ranking not in RANKINGS:
        raise QuantizationError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
    skip = list(options.pop("skip", ()))
    fp32 = float(eval_fn(model))
    qmodel = quantize(model, calib_loader, skip=skip, **options)
    first = float(eval_fn(qmodel))
    report = AccuracyReport(fp32, first, first, float(max_drop), ranking)
    if fp32 - first > max_drop:
        names = candidate_layers(model, skip)
        if ranking == "metric":
            rows = [LayerRow(n, float(eval_fn(quantize(model, calib_loader, skip=[*skip, n], **options))))
                    for n in names]
            rows.sort(key=lambda r: -r.score)
        else:
            bits, per_channel = options.get("weight_bits", 8), options.get("per_channel", True)
            rows = [LayerRow(n, weight_sqnr(model.get_submodule(n), bits, per_channel,
                                            options.get("weight_range", "full"))) for n in names]
            rows.sort(key=lambda r: r.score)
        report.layers = rows
        for count in range(1, len(rows) + 1):
            for r in rows[:count]:
                r.kept_float = True
            with torch.no_grad():
                qmodel = quantize(model, calib_loader, skip=[*skip, *(r.name for r in rows[:count])], **options)
            report.final = float(eval_fn(qmodel))
            if fp32 - report.final <= max_drop:
                break
        else:
            raise QuantizationError(
                f"accuracy control: even with every Conv/Linear layer float the metric is {report.final:.4f}, "
                f"{fp32 - report.final:.4f} below fp32 {fp32:.4f} (max_drop {max_drop}); the activations' "
                f"quantization alone loses more than the bound")
    qmodel.accuracy_report = report
    return qmodel
