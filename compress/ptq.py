"""``compress.quantize``: post-training quantization in one call."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from compress.errors import QuantizationError, translate_errors
from compress.serialize import records_provenance
from quant import QConfig, QuantSpec, calibrate, freeze, make_observer, prepare, split_batch
from quant.calibrate import to_device
from quant.eager import prepare_leaves
from quant.observers import OBSERVERS
from quant.spec import WEIGHT_INT8_PER_CHANNEL, WEIGHT_INT8_PER_TENSOR
from quant.trace import UntraceableRoot

WEIGHT_RANGES = ("full", "reduced")
STATIC_WEIGHT_BITS = (4, 8)  # bit widths compress.quantize accepts; stored in int8 containers
REDUCED_WEIGHT_BITS = 7  # ORT's reduce_range: u8×s8 pair sums 2·255·63 fit int16 (vpmaddubsw) exactly


def weight_spec(per_channel: bool, bits: int = 8, weight_range: str = "full") -> QuantSpec:
    """Symmetric narrow-range weights; ``weight_range='reduced'`` caps them at 7 bits ([-63, 63]).

    Why reduced: ONNX Runtime (and oneDNN) on x86 CPUs without VNNI add pairs of u8×s8 products
    in int16 with saturation; 8-bit weights overflow it, 7-bit weights never do, so the file
    runs exactly there too (DESIGN.md §3). Fewer bits than 7 are already safe."""
    if weight_range not in WEIGHT_RANGES:
        raise QuantizationError(f"weight_range must be one of {list(WEIGHT_RANGES)}, got {weight_range!r}")
    if bits not in STATIC_WEIGHT_BITS:
        raise QuantizationError(f"weight_bits must be one of {list(STATIC_WEIGHT_BITS)} (what the int8 export and "
                                f"runtime carry; 4-bit files: compress.quantize_weight_only), got {bits}")
    if weight_range == "reduced":
        bits = min(bits, REDUCED_WEIGHT_BITS)
    base = WEIGHT_INT8_PER_CHANNEL if per_channel else WEIGHT_INT8_PER_TENSOR
    return QuantSpec(bits=bits, signed=True, symmetric=True, per_channel=base.per_channel, narrow=True)


def build_qconfig(
    method: str,
    *,
    per_channel: bool = True,
    weight_bits: int = 8,
    weight_range: str = "full",
    activation_dtype: str = "uint8",
    percentile: float = 99.99,
    bins: int = 8192,
    skip: Iterable[str] = (),
    learnable_scales: bool = False,
    observer_kwargs: dict[str, Any] | None = None,
    float_adds: bool = False,
) -> QConfig:
    """The QConfig behind ``quantize``/``prepare_qat``, validated up front."""
    if method not in OBSERVERS:
        raise QuantizationError(f"unknown calibration method '{method}'; choose one of {sorted(OBSERVERS)}")
    act = QConfig.activation_spec(activation_dtype)
    kwargs: dict[str, Any] = dict(observer_kwargs or {})
    if method != "minmax":
        kwargs.setdefault("bins", bins)
        kwargs.setdefault("unsigned_levels", act.qmax - act.qmin + 1)
    if method == "percentile":
        kwargs.setdefault("percentile", percentile)
    if method in ("kl", "entropy"):
        kwargs.setdefault("symmetric", act.symmetric)
    return QConfig(
        activation=act,
        weight=weight_spec(per_channel, weight_bits, weight_range),
        observer=lambda name: make_observer(method, name, **kwargs),
        learnable_scales=learnable_scales,
        skip=frozenset(skip),
        quantize_adds=not float_adds,
    )


def first_example(
    loader: Iterable, transform_fn: Callable[[Any], Any] | None = None, model: nn.Module | None = None
) -> tuple[tuple, dict]:
    """The first batch as (args, kwargs) (quant.split_batch's rule); raises on an empty loader."""
    for batch in loader:
        return split_batch(batch, transform_fn, model)
    raise QuantizationError("the calibration loader is empty: it yielded no batch")


@records_provenance
@translate_errors
def quantize(
    model: nn.Module,
    calib_loader: Iterable,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    weight_bits: int = 8,
    weight_range: str = "full",
    activation_dtype: str = "uint8",
    percentile: float = 99.99,
    bins: int = 8192,
    max_batches: int | None = None,
    skip: Iterable[str] = (),
    float_adds: bool = False,
    on_untraceable: str = "error",
    on_zero_range: str = "error",
    progress: bool = True,
    transform_fn: Callable[[Any], Any] | None = None,
    report: bool = False,
    eval_fn: Callable[[nn.Module], float] | None = None,
    max_drop: float | None = None,
) -> nn.Module:
    """Post-training quantization: a new fake-quant model in eval mode; ``model`` is untouched.

    With ``eval_fn`` (model -> metric, higher is better) and ``max_drop``, the fewest Conv/Linear
    layers are kept float so the metric stays within ``max_drop`` of fp32
    (compress.accuracy_control; ``qmodel.accuracy_report`` says which and why).

    Batches reach the model as ``quant.split_batch`` says: a tensor, ``(inputs, label)``, a
    tuple of inputs, a dict of keyword inputs (``input_ids``, ``attention_mask``, ...), or
    whatever ``transform_fn(batch)`` returns (a tensor, a tuple, or a dict of keyword inputs).
    The graph is captured with torch.export; the result is called like ``model``.
    ``report=True`` attaches ``qmodel.quant_report`` (compress.layer_report: every op int8 or
    float and why, its scale, its SQNR against fp32 on up to 4 calibration batches).

    ``method``: 'minmax', 'percentile' (clip at ``percentile``), 'kl' (TensorRT entropy)
    or 'mse'. Weights are int8 symmetric per output channel unless ``per_channel=False``;
    activations uint8 asymmetric unless ``activation_dtype='int8'``; ``weight_range='reduced'``
    limits weights to 7 bits so ONNX Runtime is exact on CPUs without VNNI. Modules in ``skip``
    stay float; ``float_adds=True`` keeps residual adds float (transformers: their residual
    stream has outlier features). ``on_untraceable='float'`` keeps untraceable submodules in float
    with a warning instead of raising, and a model whose own forward cannot be traced
    gets its Conv2d/Linear leaves quantized in eager mode (no BN folding, not exportable).
    The forward simulates the int8 graph exactly (DESIGN.md §3): what ``export_onnx``
    writes and the runtime executes.
    """
    if eval_fn is not None or max_drop is not None:
        options = {k: v for k, v in locals().items() if k not in ("model", "calib_loader", "eval_fn", "max_drop")}
        from compress.accuracy_control import quantize_with_accuracy_control

        return quantize_with_accuracy_control(model, calib_loader, eval_fn=eval_fn, max_drop=max_drop, **options)
    if on_untraceable not in ("error", "float"):
        raise QuantizationError(f"on_untraceable must be 'error' or 'float', got {on_untraceable!r}")
    qconfig = build_qconfig(
        method, per_channel=per_channel, weight_bits=weight_bits, weight_range=weight_range,
        activation_dtype=activation_dtype, percentile=percentile, bins=bins, skip=skip, float_adds=float_adds,
    )
    args, kwargs = example_args(model, calib_loader, transform_fn)
    try:
        qmodel = prepare(model, args, qconfig, example_kwargs=kwargs, float_fallback=on_untraceable == "float")
    except UntraceableRoot as exc:
        if on_untraceable != "float":
            raise
        warnings.warn(f"{exc}. Quantizing Conv2d/Linear leaves only: no BatchNorm folding, not exportable",
                      stacklevel=3)
        qmodel = prepare_leaves(model, qconfig)
    calibrate(qmodel, calib_loader, progress=progress, max_batches=max_batches, transform_fn=transform_fn,
              input_model=model)
    freeze(qmodel, on_zero_range=on_zero_range)
    qmodel.eval()
    if report:
        from compress.layer_report import layer_report

        qmodel.quant_report = layer_report(qmodel, calib_loader, transform_fn=transform_fn, input_model=model)
    return qmodel


def example_args(
    model: nn.Module, loader: Iterable, transform_fn: Callable[[Any], Any] | None = None
) -> tuple[tuple, dict]:
    """Example (args, kwargs) from the loader's first batch, on the model's device; keyword
    inputs are checked against ``model.forward`` so a wrong key is named up front."""
    args, kwargs = first_example(loader, transform_fn, model)
    if kwargs:
        try:
            inspect.signature(model.forward).bind(*args, **kwargs)
        except TypeError as exc:
            raise QuantizationError(f"a batch's keys do not match {type(model).__name__}.forward: {exc}") from None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return to_device(args, device), to_device(kwargs, device)
