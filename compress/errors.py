"""The project's error hierarchy.

Every error a user sees from the facade derives from :class:`CompressError`. The
lower packages (quant, prune, distill, export, runtime) may not import compress, so
each has its own base class; the classes here derive from both the project base and
the package base, and :func:`translate_errors` converts at the facade boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from distill.errors import DistillError
from export.errors import OnnxExportError
from prune.errors import PruneError
from quant.errors import QuantError
from runtime.errors import InferenceError
from runtime.errors import UnsupportedOpError as _RuntimeUnsupportedOp


class CompressError(Exception):
    """Base class of every error the compress facade raises."""


class QuantizationError(CompressError, QuantError):
    """Quantization could not proceed: bad method, bad data, untraceable module, ..."""


class PruningError(CompressError, PruneError):
    """Pruning could not proceed: bad amount, protected layer, inconsistent dependency group, ..."""


class DistillationError(CompressError, DistillError):
    """Distillation could not proceed: unknown tapped module, mismatched shapes, ..."""


class ExportError(CompressError, OnnxExportError):
    """ONNX export failed; names every offending module. Nothing was written."""


class RuntimeFailure(CompressError, InferenceError):
    """The bundled runtime could not load or run a model."""


class UnsupportedOpError(RuntimeFailure, _RuntimeUnsupportedOp):
    """The bundled runtime lacks kernels for some nodes; all of them are listed."""


class RecipeError(CompressError):
    """A recipe is invalid; the message names the key path and its line."""


class DataError(CompressError):
    """A data set could not be found or read."""


class ModelFileError(CompressError):
    """compress.save / compress.load: the model file or its architecture cannot be written or rebuilt."""


# Most specific first: the first matching source wins.
_TRANSLATIONS: list[tuple[type[BaseException], type[CompressError]]] = [
    (QuantError, QuantizationError),
    (PruneError, PruningError),
    (DistillError, DistillationError),
    (OnnxExportError, ExportError),
    (_RuntimeUnsupportedOp, UnsupportedOpError),
    (InferenceError, RuntimeFailure),
]

F = TypeVar("F", bound=Callable)


def translate_errors(fn: F) -> F:
    """Re-raise lower-package errors from ``fn`` as CompressError subclasses, message intact."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CompressError:
            raise
        except Exception as exc:
            for source, target in _TRANSLATIONS:
                if isinstance(exc, source):
                    raise target(str(exc)) from exc
            raise

    return wrapper  # type: ignore[return-value]
