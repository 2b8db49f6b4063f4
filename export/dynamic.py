"""Export of dynamic int8 models: DynamicQuantizeLinear + MatMulInteger, ONNX's standard form.

Each :class:`quant.dynamic.DynamicLinear`'s MatMul/Gemm in the float export becomes
``DynamicQuantizeLinear(x) -> MatMulInteger(q_x, W_int8, z_x) -> Cast -> Mul(s_x·s_w)``
(+ Add(bias)), the pattern ONNX Runtime fuses into its DynamicQuantizeMatMul kernel and the
bundled runtime runs on its integer GEMM; the weights are stored as int8 (K, N).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from export.api import check
from export.atomic import write_atomic
from export.weight_only import LinearSite, export_float_model, float_twin, replace_sites
from quant.dynamic import DynamicLinear


def _dynamic_nodes(site: LinearSite, name: str, module: DynamicLinear, graph: onnx.GraphProto) -> list:
    w = numpy_helper.from_array(np.ascontiguousarray(module.qweight.numpy().T), f"{name}.qweight")
    ws = numpy_helper.from_array(module.weight_scale.numpy().astype(np.float32), f"{name}.weight_scale")
    graph.initializer.extend([w, ws])
    x, p = site.node.input[0], f"{name}/"
    return [
        helper.make_node("DynamicQuantizeLinear", [x], [p + "xq", p + "xs", p + "xz"],
                         name=p + "DynamicQuantizeLinear"),
        helper.make_node("MatMulInteger", [p + "xq", w.name, p + "xz"], [p + "acc"], name=p + "MatMulInteger"),
        helper.make_node("Cast", [p + "acc"], [p + "accf"], name=p + "Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [p + "xs", ws.name], [p + "scale"], name=p + "scale"),
        helper.make_node("Mul", [p + "accf", p + "scale"], [site.node.output[0]], name=p + "Mul"),
    ]


def build_dynamic(
    qmodel: nn.Module, example_inputs: tuple | Mapping[str, torch.Tensor], **export_kwargs
) -> onnx.ModelProto:
    """The checked ONNX model of a dynamic int8 model, in memory."""
    twin, found = float_twin(qmodel, (DynamicLinear,), lambda m: m.dequantized_weight())
    model = replace_sites(export_float_model(twin, example_inputs, **export_kwargs), found, _dynamic_nodes)
    check(model)
    return model


def export_dynamic(
    qmodel: nn.Module, path: str | os.PathLike, example_inputs: tuple | Mapping[str, torch.Tensor], **export_kwargs
) -> Path:
    """Write the dynamic int8 ONNX file atomically (``export_kwargs`` as for export_weight_only)."""
    return write_atomic(path, build_dynamic(qmodel, example_inputs, **export_kwargs).SerializeToString())
