"""export: fake-quant model → int8 ONNX (QDQ or QOperator), cleaned, checked, written atomically.

The quantized patterns are written by export/lower.py + export/qdq_ops.py (our own
ONNX translations), every float op by torch.onnx's dynamo exporter (export/dynamo.py).
Imports quant, torch, onnx and onnxscript only (DESIGN.md §2).
"""

from export.api import build_quantized, export_float, export_quantized
from export.errors import OnnxExportError

__all__ = ["OnnxExportError", "build_quantized", "export_float", "export_quantized"]
