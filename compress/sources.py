"""Where a recipe's model and data come from, and the model file format the CLI writes.

A model is a torchvision architecture name, an import path ``package.module:factory`` or
a model file written by :func:`save_model` (architecture + state_dict, read with
``weights_only=True`` so nothing is unpickled). Data is the built-in ``mnist5k``, an
ImageFolder directory or an import path to a factory returning ``(train, test)`` loaders.
The ``check_*`` functions run during validation and only look things up, never build.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from compress.errors import DataError, RecipeError
from export.atomic import write_atomic

DATA_SOURCE_KINDS = ("mnist5k", "an ImageFolder directory", "package.module:factory")
MODEL_FILE_SUFFIXES = (".pt", ".pth")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def resolve_import(target: str) -> Callable[..., Any]:
    """``package.module:attr`` → the attribute; errors say which half failed."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"cannot import module '{module_name}': {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RecipeError(f"module '{module_name}' has no attribute '{attr}'") from None


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def check_model_source(value: str, base: Path) -> str | None:
    """Problem text if ``value`` names no model source, else None."""
    if ":" in value:
        try:
            resolve_import(value)
        except RecipeError as exc:
            return str(exc)
        return None
    if value.endswith(MODEL_FILE_SUFFIXES) or os.sep in value:
        return None if (base / value).is_file() else f"model file not found: {base / value}"
    if value in _torchvision_names():
        return None
    return f"'{value}' is neither a torchvision model, an import path (package.module:factory) nor a model file"


def check_data_source(value: str, base: Path) -> str | None:
    """Problem text if ``value`` names no data source, else None."""
    if value == "mnist5k":
        return None
    if ":" in value:
        try:
            resolve_import(value)
        except RecipeError as exc:
            return str(exc)
        return None
    if (base / value).is_dir():
        return None
    return f"'{value}' is not one of {', '.join(DATA_SOURCE_KINDS)} (directory not found: {base / value})"


# --- models ---------------------------------------------------------------------------------
def _resize(module: nn.Module, shapes: dict[str, torch.Size]) -> nn.Module:
    """A fresh Conv2d/Linear/BatchNorm with the saved tensors' shapes (channels removed by pruning)."""
    w = shapes["weight"]
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        groups = w[0] if depthwise else module.groups
        return nn.Conv2d(w[1] * groups, w[0], module.kernel_size, module.stride, module.padding, module.dilation,
                         groups, bias="bias" in shapes, padding_mode=module.padding_mode)
    if isinstance(module, nn.Linear):
        return nn.Linear(w[1], w[0], bias="bias" in shapes)
    if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
        return type(module)(w[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    raise RecipeError(f"cannot resize {type(module).__name__} to the saved shapes")


def conform_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Replace layers whose saved weights have other shapes, so a pruned state_dict loads.

    Structured pruning removes channels per layer depending on the weights, so the shapes
    cannot be re-derived from the recipe; they are read from the saved tensors instead.
    """
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d | nn.Linear | nn.BatchNorm2d | nn.BatchNorm1d):
            continue
        shapes = {k: state[f"{name}.{k}"].shape for k in ("weight", "bias") if f"{name}.{k}" in state}
        if "weight" not in shapes or shapes["weight"] == module.weight.shape:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, _resize(module, shapes))
    return model


def _load_state(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file or pickled objects weights_only refuses
        raise RecipeError(f"cannot load {path} with weights_only=True: {exc}") from None


def build_model(spec: dict[str, Any], base: Path) -> nn.Module:
    """The float model a validated ``model:`` mapping describes, in eval mode."""
    source = spec["source"]
    if ":" in source:
        model = resolve_import(source)(**spec["kwargs"])
    elif source.endswith(MODEL_FILE_SUFFIXES) or os.sep in source:
        saved = _load_state(base / source)
        if not isinstance(saved, dict) or not {"model", "state_dict"} <= saved.keys():
            raise RecipeError(f"{base / source}: not a model file written by compress (keys model, state_dict)")
        model = build_model(saved["model"], base)
        conform_to_state_dict(model, saved["state_dict"]).load_state_dict(saved["state_dict"])
    else:
        import torchvision

        model = torchvision.models.get_model(source, weights=None, **spec["kwargs"])
    if not isinstance(model, nn.Module):
        raise RecipeError(f"model source '{source}' returned {type(model).__name__}, not an nn.Module")
    if spec.get("weights"):
        state = _load_state(base / spec["weights"])
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        conform_to_state_dict(model, state).load_state_dict(state)
    return model.eval()


def save_model(model: nn.Module, spec: dict[str, Any], path: Path) -> Path:
    """A model file ``build_model`` reads back: the architecture spec and the state_dict."""
    import io

    buf = io.BytesIO()
    arch = {"source": spec["source"], "kwargs": spec["kwargs"], "weights": None, "input_shape": spec["input_shape"]}
    torch.save({"model": arch, "state_dict": model.state_dict()}, buf)
    return write_atomic(path, buf.getvalue())


# --- data -----------------------------------------------------------------------------------
def random_images(
    shape: tuple[int, ...] = (3, 224, 224), n: int = 32, classes: int = 1000, batch_size: int = 8, seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """Gaussian images with random labels: calibration input for latency-only recipes.

    Accuracy on it is chance; the numbers that matter are latency, size and how often the
    int8 model picks the same class as fp32 (the evaluate stage's agreement).
    """
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size)


def _image_folder(root: Path, spec: dict[str, Any], seed: int) -> tuple[DataLoader, DataLoader]:
    from torchvision import datasets, transforms

    size = spec["image_size"]
    tf = transforms.Compose([
        transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    if (root / "train").is_dir() and (root / "val").is_dir():
        train_set, test_set = datasets.ImageFolder(root / "train", tf), datasets.ImageFolder(root / "val", tf)
    else:
        full = datasets.ImageFolder(root, tf)
        n_test = max(1, round(len(full) * spec["val_fraction"]))
        train_set, test_set = random_split(full, [len(full) - n_test, n_test], torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    bs = spec["batch_size"]
    return DataLoader(train_set, batch_size=bs, shuffle=True, generator=g), DataLoader(test_set, batch_size=bs)


def build_loaders(spec: dict[str, Any], base: Path, seed: int) -> tuple[DataLoader, DataLoader]:
    """(train, test) loaders of a validated ``data:`` mapping."""
    source = spec["source"]
    if source == "mnist5k":
        from compress.data import mnist5k_loaders

        return mnist5k_loaders(batch_size=spec["batch_size"], test_size=spec["test_size"], seed=seed)
    if ":" in source:
        loaders = resolve_import(source)(**spec["kwargs"])
        if not (isinstance(loaders, tuple | list) and len(loaders) == 2):
            raise DataError(f"data factory '{source}' must return (train_loader, test_loader)")
        return loaders[0], loaders[1]
    return _image_folder(base / source, spec, seed)
