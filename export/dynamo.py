"""Fake-quant GraphModule → QDQ ONNX through torch.onnx's dynamo exporter (DESIGN.md §6).

The model is lowered to its export form (export/lower.py: the quantized patterns as
custom ops with our own ONNX translations), then ``torch.onnx.export(dynamo=True)``
captures it with torch.export and writes every float ATen op with its maintained
table, symbolic batch dimension included. Graph outputs are renamed ``output`` /
``output_i`` so files of every model read the same way.
"""

from __future__ import annotations

import re
import warnings

import onnx
import torch
from torch import fx, nn

from export.errors import OnnxExportError
from export.lower import lower
from export.qdq_ops import translations
from quant.capture import batch_of_two, dynamic_batch


def build_qdq(
    qmodel: nn.Module, args: tuple, kwargs: dict, opset: int, dynamic: bool
) -> onnx.ModelProto:
    """The QDQ ONNX model of ``qmodel`` (before clean-up); raises OnnxExportError naming the problem."""
    if not isinstance(qmodel, fx.GraphModule):
        raise OnnxExportError(
            f"export needs the torch.fx GraphModule returned by compress.quantize or prepare_qat, "
            f"got {type(qmodel).__name__}"
        )
    gm = lower(qmodel)
    shapes = None
    if dynamic:
        args, kwargs = batch_of_two(args, kwargs)
        shapes = dynamic_batch(gm, args, kwargs)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                gm, args, kwargs=kwargs, dynamo=True, opset_version=opset, dynamic_shapes=shapes,
                custom_translation_table=translations(opset), optimize=True, verbose=False,
            )
    except Exception as exc:  # torch.onnx raises many types; each means "cannot export this op"
        raise OnnxExportError(f"torch.onnx cannot export {type(qmodel).__name__}: {_first_lines(exc)}") from exc
    model = program.model_proto
    _strip_metadata(model)
    _name_outputs(model)
    return model


def _strip_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node stack traces, module paths and intermediate shapes (a third of a small file)."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]  # intermediate shapes: onnx.checker and every runtime infer them
    del model.graph.metadata_props[:]
    del model.metadata_props[:]


def _first_lines(exc: Exception, n: int = 8) -> str:
    """The useful part of torch.onnx's message: its exception summary (which op, which node)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    _, found, summary = text.partition("## Exception summary")
    lines = [ln for ln in (summary if found else text).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: " + "\n".join(lines[:n])


def _name_outputs(model: onnx.ModelProto) -> None:
    """Graph outputs become ``output`` (one) or ``output_0``, ``output_1``, ... via Identity nodes."""
    g = model.graph
    outs = list(g.output)
    for i, vi in enumerate(outs):
        name = "output" if len(outs) == 1 else f"output_{i}"
        g.node.append(onnx.helper.make_node("Identity", [vi.name], [name], name=f"{name}/Identity"))
        vi.name = name
