"""compress: the facade users touch.

Every public function is one arrow of the flow in DESIGN.md §1. Imports are lazy so
that ``import compress`` is cheap and ``compress.errors`` can be imported alone.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

if importlib.util.find_spec("torch") is None:
    # The base install is the runtime alone; say how to get the rest instead of failing
    # somewhere inside quant/ with a bare "No module named 'torch'".
    raise ModuleNotFoundError(
        "compress (quantize, prune, distill, export, recipes) needs PyTorch, which this environment lacks: "
        "install the toolkit with pip install 'compress[full]' (CPU-only torch: see the README). "
        "The int8 runtime alone works without torch: import runtime; runtime.InferenceSession('model.onnx')",
        name="torch",
    )

from compress.errors import (
    CompressError,
    DataError,
    DistillationError,
    ExportError,
    ModelFileError,
    PruningError,
    QuantizationError,
    RecipeError,
    RuntimeFailure,
    UnsupportedOpError,
)

# public name -> module that defines it
_LAZY = {
    "quantize": "compress.ptq",
    "quantize_dynamic": "compress.transformer_methods",
    "quantize_weight_only": "compress.transformer_methods",
    "smooth_quant": "compress.transformer_methods",
    "export_weight_only": "compress.transformer_methods",
    "export_dynamic": "compress.transformer_methods",
    "prepare_qat": "compress.qat",
    "export_onnx": "compress.onnx_export",
    "layer_report": "compress.layer_report",
    "prune": "compress.pruning",
    "sensitivity_analysis": "compress.pruning",
    "distill": "compress.distillation",
    "evaluate": "compress.evaluation",
    "save": "compress.serialize",
    "load": "compress.serialize",
}

__all__ = [
    "CompressError",
    "DataError",
    "DistillationError",
    "ExportError",
    "ModelFileError",
    "PruningError",
    "QuantizationError",
    "RecipeError",
    "RuntimeFailure",
    "UnsupportedOpError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")
