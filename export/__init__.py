"""export: fake-quant torch.fx model → int8 ONNX (QDQ or QOperator), cleaned, checked, written atomically.

Imports quant, torch and onnx only (DESIGN.md §2).
"""

from export.api import build_quantized, export_float, export_quantized
from export.errors import OnnxExportError

__all__ = ["OnnxExportError", "build_quantized", "export_float", "export_quantized"]
