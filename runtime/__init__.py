"""The bundled int8 runtime: ONNX in, C-extension integer kernels underneath.

Deployable without torch: it imports numpy, onnx and its own C extension only."""

from runtime.errors import InferenceError, UnsupportedOpError
from runtime.kernels import available_paths
from runtime.session import InferenceSession

__all__ = ["InferenceError", "InferenceSession", "UnsupportedOpError", "available_paths"]
