"""``compress.save`` / ``compress.load``: quantize (or prune) once, deploy later.

A model file holds plain data and tensors only, read back with
``torch.load(weights_only=True)``, so loading never runs code from the file:

- the float architecture: an import path (``package.module:Class`` or a factory) and
  its keyword arguments, plus the shape of every float tensor (pruned layers are
  rebuilt at their saved size);
- for a quantized model, the public call that made it (``quantize`` or ``prepare_qat``)
  with its options and the shapes of the model's inputs;
- the model's ``state_dict``.

Loading builds the float architecture, repeats the recorded call on one random batch
(the cheap way to obtain the same structure, whatever the capture does inside) and then
loads the saved ``state_dict`` over it, which overwrites every calibrated value: the
loaded model computes bit for bit what the saved one did, exports the same ONNX file
and can keep training. The facade's ``quantize`` and ``prepare_qat`` record the call
(:func:`records_provenance`); a plain or pruned ``nn.Module`` needs no record.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import fx, nn
from torch.nn.utils import prune as torch_prune

from compress.errors import ModelFileError
from export.atomic import write_atomic

FORMAT = "compress.save/1"
PROVENANCE = "compress_provenance"  # attribute the facade sets on the models it returns
# Arguments of the recorded calls that do not shape the result (data, progress, error policy).
NOT_RECORDED = {"model", "calib_loader", "example_inputs", "max_batches", "progress", "on_zero_range"}
PLAIN = (str, int, float, bool, type(None))


@dataclass
class Provenance:
    """How a facade call made a model: what :func:`save` needs to rebuild it."""

    function: str  # "quantize" or "prepare_qat"
    architecture: type  # the float model's class
    float_shapes: dict[str, list[int]]
    masked: list[str]  # modules whose weights carry unstructured-pruning masks
    options: dict[str, Any]
    calibrated: bool  # prepare_qat got a calib_loader (its observers depend on it)
    inputs: list[dict[str, Any]] | None = field(default=None)  # shape/dtype per input, when known


F = TypeVar("F", bound=Callable)


def records_provenance(fn: F) -> F:
    """Decorator for the facade's ``quantize`` / ``prepare_qat``: remember the call on the result."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()  # record every option, so a later default cannot change the rebuild
        model = bound.arguments["model"]
        options = {k: v for k, v in bound.arguments.items() if k not in NOT_RECORDED}
        inputs = _tensor_specs(bound.arguments.get("example_inputs")) or _graph_inputs(result)
        setattr(result, PROVENANCE, Provenance(
            function=fn.__name__, architecture=type(model), float_shapes=_shapes(model), masked=_masked(model),
            options=options, calibrated=bound.arguments.get("calib_loader") is not None, inputs=inputs,
        ))
        return result

    return wrapper  # type: ignore[return-value]


def save(model: nn.Module, path: str | os.PathLike, *, architecture: str | None = None,
         kwargs: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (from ``compress.quantize``, ``compress.prepare_qat``, ``compress.prune``
    or any ``nn.Module``) to ``path`` atomically; :func:`load` reads it back.

    ``architecture`` (``package.module:factory``) and ``kwargs`` say how to build the float
    model; by default its class is called without arguments, and layers whose saved
    shapes differ (pruning, another width) are rebuilt at the saved size.
    """
    record: Provenance | None = getattr(model, PROVENANCE, None)
    cls = record.architecture if record else type(model)
    if record is None and isinstance(model, fx.GraphModule):
        raise ModelFileError(
            f"cannot save this {type(model).__name__}: only models returned by compress.quantize or "
            "compress.prepare_qat (or plain nn.Modules) carry what is needed to rebuild them"
        )
    arch = architecture or _import_path(cls)
    _resolve(arch)  # fails now, not on the deploy machine
    data: dict[str, Any] = {
        "format": FORMAT,
        "architecture": {"factory": arch, "kwargs": _plain(dict(kwargs or {}), "kwargs")},
        "float_shapes": record.float_shapes if record else _shapes(model),
        "masked": record.masked if record else _masked(model),
        "quantized": None,
        "training": model.training,
        "state_dict": model.state_dict(),
    }
    if record is not None:
        if record.inputs is None:
            raise ModelFileError("cannot save: the model's input shapes are unknown (no example in its graph)")
        data["quantized"] = {"function": record.function, "options": _plain(record.options, "options"),
                             "calibrated": record.calibrated, "inputs": record.inputs}
    buf = io.BytesIO()
    torch.save(data, buf)
    return write_atomic(path, buf.getvalue())


def load(path: str | os.PathLike) -> nn.Module:
    """The model :func:`save` wrote, in the train/eval mode it was saved in."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except Exception as exc:  # corrupt file, or pickled objects that weights_only refuses
        raise ModelFileError(f"{path}: not a model file compress.load can read safely ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not written by compress.save (format {FORMAT!r} expected)")
    arch = data["architecture"]
    factory = _resolve(arch["factory"])
    try:
        model = factory(**arch["kwargs"])
    except Exception as exc:
        raise ModelFileError(f"{path}: {arch['factory']}(**{arch['kwargs']}) failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"{path}: {arch['factory']} returned {type(model).__name__}, not an nn.Module")
    _conform(model, data["float_shapes"], data["masked"])
    if data["quantized"] is not None:
        model = _requantize(model.eval(), data["quantized"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: the saved weights do not fit {arch['factory']}: {exc}") from None
    if data["quantized"] is None:
        for name in data["masked"]:  # the masked weight, as torch's pruning hook computes it
            module = model.get_submodule(name)
            module.weight = module.weight_orig * module.weight_mask
    return model.train(data["training"])


# --- helpers ---------------------------------------------------------------------------------
def _shapes(model: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _masked(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if hasattr(m, "weight_mask")]


def _tensor_specs(example: Any) -> list[dict[str, Any]] | None:
    if example is None:
        return None
    items = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not all(isinstance(t, torch.Tensor) for t in items):
        return None
    return [{"shape": [_concrete(d) for d in t.shape], "dtype": str(t.dtype).removeprefix("torch.")} for t in items]


def _concrete(dim: Any) -> int:
    """A symbolic dimension (dynamic batch of a captured graph) as its example value."""
    if isinstance(dim, int):
        return dim
    hint = getattr(getattr(dim, "node", None), "hint", None)
    return int(hint) if hint is not None else 1


def _graph_inputs(model: nn.Module) -> list[dict[str, Any]] | None:
    """Input shapes from the captured graph's placeholders (their example values)."""
    if not isinstance(model, fx.GraphModule):
        return None
    values = [n.meta.get("val") for n in model.graph.nodes if n.op == "placeholder"]
    return _tensor_specs(values) if values else None


def _import_path(cls: type) -> str:
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ModelFileError(
            f"{cls.__qualname__} is defined in a script or a function, where compress.load cannot import it: "
            "move it to a module, or pass architecture='package.module:factory'"
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _resolve(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelFileError(f"architecture '{path}': cannot import module '{module_name}': {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelFileError(f"architecture '{path}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelFileError(f"architecture '{path}' is not callable")
    return obj


def _plain(value: Any, where: str) -> Any:
    """``value`` as lists/dicts of plain values (what weights_only loading accepts), or an error."""
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ModelFileError(f"cannot save {where}: {type(value).__name__} is not plain data")


def _conform(model: nn.Module, shapes: dict[str, list[int]], masked: list[str]) -> None:
    """Resize layers to the saved shapes and re-attach pruning masks, so the state_dict fits."""
    from compress.sources import conform_to_state_dict

    plain = {k.replace("weight_orig", "weight"): torch.empty(s, device="meta") for k, s in shapes.items()}
    conform_to_state_dict(model, plain)
    for name in masked:
        module = model.get_submodule(name)
        torch_prune.custom_from_mask(module, "weight", torch.ones_like(module.weight))


def _requantize(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Repeat the recorded facade call on one random batch: the same structure, any values."""
    import compress

    inputs = tuple(_random_input(spec) for spec in record["inputs"])
    batch: Any = inputs[0] if len(inputs) == 1 else (inputs,)
    options = dict(record["options"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero ranges etc. of the random batch: overwritten below
        if record["function"] == "prepare_qat":
            calib = [batch] if record["calibrated"] else None
            return compress.prepare_qat(model, inputs, calib_loader=calib, max_batches=1, progress=False,
                                        on_zero_range="warn", **options)
        return compress.quantize(model, [batch], max_batches=1, progress=False, on_zero_range="warn", **options)


def _random_input(spec: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, spec["dtype"])
    if dtype.is_floating_point:
        return torch.randn(spec["shape"], dtype=dtype)
    return torch.zeros(spec["shape"], dtype=dtype)
