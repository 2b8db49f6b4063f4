"""compress: the facade users touch.

Every public function is one arrow of the flow in DESIGN.md §1. Imports are lazy so
that ``import compress`` is cheap and ``compress.errors`` can be imported alone.
"""

from __future__ import annotations

import importlib
from typing import Any

from compress.errors import (
    CompressError,
    DataError,
    DistillationError,
    ExportError,
    PruningError,
    QuantizationError,
    RecipeError,
    RuntimeFailure,
    UnsupportedOpError,
)

# public name -> module that defines it
_LAZY = {
    "quantize": "compress.ptq",
    "prepare_qat": "compress.qat",
    "export_onnx": "compress.onnx_export",
    "prune": "compress.pruning",
    "sensitivity_analysis": "compress.pruning",
    "distill": "compress.distillation",
    "evaluate": "compress.evaluation",
}

__all__ = [
    "CompressError",
    "DataError",
    "DistillationError",
    "ExportError",
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
