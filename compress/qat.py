"""``compress.prepare_qat``: quantization-aware training on the PTQ preparation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from compress.errors import QuantizationError, translate_errors
from compress.ptq import build_qconfig
from compress.serialize import records_provenance
from quant import calibrate, freeze, prepare
from quant.qat import QATObserver, observers_from_calibration, start_qat


@records_provenance
@translate_errors
def prepare_qat(
    model: nn.Module,
    example_inputs: tuple | torch.Tensor,
    *,
    calib_loader: Iterable | None = None,
    method: str = "minmax",
    per_channel: bool = True,
    weight_bits: int = 8,
    weight_range: str = "full",
    activation_dtype: str = "uint8",
    freeze_bn_after: int | None = None,
    freeze_observers_after: int | None = None,
    learnable_scales: bool = False,
    averaging_constant: float = 0.01,
    percentile: float = 99.99,
    max_batches: int | None = None,
    skip: Iterable[str] = (),
    on_untraceable: str = "error",
    on_zero_range: str = "error",
    progress: bool = True,
) -> nn.Module:
    """A fake-quant copy of ``model`` in train mode, ready for an ordinary training loop.

    Forward passes use the straight-through estimator; Conv→BN pairs train with the BN
    folded on the fly. A *step* is one training-mode forward: BN statistics freeze after
    ``freeze_bn_after`` steps and activation ranges after ``freeze_observers_after``
    (``None``: never; 0: from the start, which needs ``calib_loader``). With a
    ``calib_loader`` the ranges start from PTQ calibration by ``method`` ('minmax',
    'percentile', 'kl', 'mse'); otherwise from the first training batch. Ranges then
    follow a moving average of batch min/max (``averaging_constant``), reduced across
    torch.distributed ranks every step so DDP replicas stay identical.
    ``weight_range='reduced'``: 7-bit weights, exact in ONNX Runtime on CPUs without VNNI.
    ``learnable_scales=True`` trains activation scales by LSQ, initialised as above.

    ``model.eval()`` turns it into the deterministic int8 simulation (no statistics
    move in eval mode) that ``compress.export_onnx`` writes; nothing else to call.
    The copy lives on ``model``'s device; ``model`` itself is untouched.
    """
    schedule = {"freeze_bn_after": freeze_bn_after, "freeze_observers_after": freeze_observers_after}
    for key, steps in schedule.items():
        if steps is not None and (not isinstance(steps, int) or steps < 0):
            raise QuantizationError(f"{key} must be None (never) or an int ≥ 0, got {steps!r}")
    if freeze_observers_after == 0 and calib_loader is None:
        raise QuantizationError("freeze_observers_after=0 fixes ranges before any data: pass a calib_loader")
    if on_untraceable not in ("error", "float"):
        raise QuantizationError(f"on_untraceable must be 'error' or 'float', got {on_untraceable!r}")
    if not 0.0 < averaging_constant <= 1.0:
        raise QuantizationError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
    example = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    qconfig = build_qconfig(
        method, per_channel=per_channel, weight_bits=weight_bits, weight_range=weight_range,
        activation_dtype=activation_dtype, percentile=percentile, skip=skip, learnable_scales=learnable_scales,
    )
    if calib_loader is None:  # no calibration: QAT observers from the first step
        qconfig.observer = lambda name: QATObserver(name, averaging_constant, freeze_observers_after)
    qmodel = prepare(model, example, qconfig, float_fallback=on_untraceable == "float", qat=True)
    if calib_loader is not None:
        calibrate(qmodel, calib_loader, progress=progress, max_batches=max_batches)
        freeze(qmodel, on_zero_range=on_zero_range)  # merges ranks, sets scales (and LSQ initial scales)
        observers_from_calibration(qmodel, averaging_constant=averaging_constant,
                                   freeze_after=freeze_observers_after)
    start_qat(qmodel, freeze_bn_after=freeze_bn_after)
    return qmodel.train()
