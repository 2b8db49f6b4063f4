"""Transformer and LLM-style compression in one call each: dynamic int8, weight-only int4/int8
(RTN, GPTQ, AWQ), SmoothQuant, and their ONNX export.

These work at module level (Linear and HuggingFace Conv1D layers are swapped for modules that
simulate exactly what the exported kernels compute), so any model whose Linear layers are
modules works, whether or not its graph can be captured.  Each returns a new model in eval
mode; the argument is left untouched.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from compress.errors import translate_errors


def _copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).eval()


@translate_errors
def quantize_dynamic(model: nn.Module, *, skip: Iterable[str] = (), granularity: str = "per_tensor") -> nn.Module:
    """int8 weights per output channel, uint8 activations quantized at run time, per tensor
    (ONNX DynamicQuantizeLinear, what ONNX Runtime fuses) or ``granularity="per_token"`` (one
    scale and zero point per row); no calibration data.  ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``
    layers get int8 W and R per gate row, with the input sequence and each step's hidden state
    quantized per tensor at run time (ORT's DynamicQuantizeLSTM).  Export with
    :func:`export_dynamic`."""
    from quant.dynamic import quantize_dynamic as convert

    return convert(_copy(model), skip=skip, granularity=granularity)


@translate_errors
def quantize_weight_only(
    model: nn.Module,
    calib_loader: Iterable | None = None,
    *,
    bits: int = 4,
    group_size: int = 128,
    method: str = "rtn",
    symmetric: bool = False,
    skip: Iterable[str] = (),
    max_batches: int | None = None,
) -> nn.Module:
    """Weight-only ``bits``-bit (4 or 8) group-wise quantization by ``method`` 'rtn', 'gptq' or
    'awq' (the last two need ``calib_loader``).  Asymmetric groups (a zero point each) by
    default: at 4 bits the 16th level and the offset are worth their half byte per group.
    Export with :func:`export_weight_only` (com.microsoft MatMulNBits)."""
    from quant.weight_only import quantize_weight_only as convert

    return convert(_copy(model), calib_loader, bits=bits, group_size=group_size, method=method,
                   symmetric=symmetric, skip=skip, max_batches=max_batches)


@translate_errors
def smooth_quant(
    model: nn.Module,
    calib_loader: Iterable,
    *,
    alpha: float = 0.5,
    skip: Iterable[str] = (),
    max_batches: int | None = None,
) -> nn.Module:
    """SmoothQuant: a float model whose Linear inputs are divided per feature by
    ``max|x|^α / max|W|^(1-α)`` (weights multiplied), ready for ``compress.quantize``."""
    from quant.smoothquant import smooth_quant as smooth

    return smooth(_copy(model), calib_loader, alpha=alpha, skip=skip, max_batches=max_batches)


@translate_errors
def export_weight_only(
    qmodel: nn.Module, path: str | os.PathLike, example_inputs: tuple | Mapping[str, torch.Tensor], **kwargs
) -> Path:
    """ONNX file with 4/8-bit MatMulNBits weights (input_names, output_names, dynamic_axes, opset)."""
    from export.weight_only import export_weight_only as export

    return export(qmodel, path, example_inputs, **kwargs)


@translate_errors
def export_dynamic(
    qmodel: nn.Module, path: str | os.PathLike, example_inputs: tuple | Mapping[str, torch.Tensor], **kwargs
) -> Path:
    """ONNX file with DynamicQuantizeLinear + MatMulInteger, LSTMs as com.microsoft DynamicQuantizeLSTM and
    GRUs/RNNs unrolled over the example's (static) sequence length (input_names, output_names, dynamic_axes, opset)."""
    from export.dynamic import export_dynamic as export

    return export(qmodel, path, example_inputs, **kwargs)
