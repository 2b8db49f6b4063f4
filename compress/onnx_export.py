"""``compress.export_onnx``: a fake-quant model → one int8 ONNX file (DESIGN.md §6)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from compress.errors import translate_errors
from export.api import export_quantized


@translate_errors
def export_onnx(
    qmodel: nn.Module,
    path: str | os.PathLike,
    example_inputs: object,
    *,
    format: str = "qdq",
    opset: int | None = None,
    dynamic_batch: bool = True,
    example_kwargs: dict | None = None,
) -> Path:
    """Write ``qmodel`` (from ``compress.quantize`` or ``prepare_qat``) as an int8 ONNX file.

    ``format='qdq'`` (default) puts QuantizeLinear/DequantizeLinear around float ops,
    the form ONNX Runtime and TensorRT prefer; ``'qoperator'`` uses integer operators
    (QLinearConv, QLinearMatMul, com.microsoft QLinearAdd, ...). Weights are int8 per
    output channel (BN folded), biases int32 at scale s_in·s_w, activations as
    calibrated. The batch dimension is symbolic unless ``dynamic_batch=False``. The
    file passes ``onnx.checker`` (full check) and is written atomically; an
    unsupported model raises ExportError naming every offending module, and nothing
    is written. ``example_inputs`` is a tensor, a tuple of positional inputs or a dict of
    keyword inputs (a transformer batch); ``example_kwargs`` adds keyword inputs to a tuple.
    Returns the file's path.
    """
    return export_quantized(
        qmodel, path, example_inputs, format=format, opset=opset, dynamic_batch=dynamic_batch,
        example_kwargs=example_kwargs,
    )
