"""Where a recipe's model and data come from, and the model file format the CLI writes.

A model is a torchvision architecture name, an import path ``package.module:factory`` or
a model file written by :func:`save_model` (architecture + state_dict, read with
``weights_only=True`` so nothing is unpickled). Data is the built-in ``mnist5k``, an
ImageFolder directory or an import path to a factory returning ``(train, test)`` loaders.
The ``check_*`` functions run during validation and only look things up, never build.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def resolve_import(target: str) -> Callable[..., Any]:
    """``package.module:attr`` → the attribute; errors say which half failed."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in (*module_name.split("."), *attr.split("."))):
        raise RecipeError(f"'{target}' is not an import path of the form package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module itself raises while importing
        raise RecipeError(f"cannot import module '{module_name}': {type(exc).__name__}: {exc}") from None
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            names = [n for n in dir(module) if not n.startswith("_")]
            hint = difflib.get_close_matches(attr, names, n=1)
            suggestion = f"; did you mean '{module_name}:{hint[0]}'?" if hint else ""
            raise RecipeError(f"module '{module_name}' has no attribute '{attr}'{suggestion}") from None
    if not callable(value):
        raise RecipeError(f"'{target}' is a {type(value).__name__}, not a factory")
    return value


def factory_kwargs_problem(source: str, kwargs: dict[str, Any]) -> tuple[str | None, str] | None:
    """(key, problem) when the factory named by ``source`` cannot take ``kwargs``, else None.

    Only import paths are checked here, by binding the kwargs to the factory's signature
    (nothing is built); torchvision builders take ``**kwargs`` and are checked when called."""
    if ":" not in source:
        return None
    try:
        fn = resolve_import(source)
        signature = inspect.signature(fn)
    except (RecipeError, TypeError, ValueError):
        return None  # the source key reports an unresolvable factory; builtins have no signature
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in named:
            close = difflib.get_close_matches(key, named, n=1)
            hint = f" did you mean '{close[0]}'?" if close else ""
            return key, f"'{source}' takes no argument '{key}';{hint} it takes {named}"
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        return None, f"'{source}' cannot be called with these kwargs: {exc}"
    return None


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


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
    close = difflib.get_close_matches(value, _torchvision_names(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"'{value}' is neither a torchvision model, an import path (package.module:factory) nor a model file{hint}"


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
        raise RecipeError(f"cannot load {path} with weights_only=True: {first_line(exc)}") from None


def _key(*path: str | int) -> str:
    """A key path as text, for errors about a spec that did not come from a recipe file."""
    return ".".join(map(str, path))


KeyAt = Callable[..., str]
"""``at("model", "kwargs")`` → the prefix of an error about that key (``Recipe.at`` adds the line)."""


def build_model(
    spec: dict[str, Any], base: Path, at: KeyAt = _key, key: tuple[str | int, ...] = ("model",)
) -> nn.Module:
    """The float model a validated ``model:`` mapping describes, in eval mode.

    Failures name the key: a factory refusing the kwargs is an error on ``kwargs``, a factory
    failing otherwise on ``source``, weights that do not fit on ``weights``."""
    source = spec["source"]
    try:
        if ":" in source:
            model = resolve_import(source)(**spec["kwargs"])
        elif source.endswith(MODEL_FILE_SUFFIXES) or os.sep in source:
            saved = _load_state(base / source)
            if not isinstance(saved, dict) or not {"model", "state_dict"} <= saved.keys():
                raise RecipeError(f"{base / source}: not a model file written by compress (keys model, state_dict)")
            model = build_model(saved["model"], base)
            _load_weights(model, saved["state_dict"], base / source)
        else:
            import torchvision

            model = torchvision.models.get_model(source, weights=None, **spec["kwargs"])
    except RecipeError as exc:
        raise RecipeError(f"{at(*key, 'source')}: {exc}") from None
    except TypeError as exc:
        if "argument" in str(exc):  # unexpected/missing keyword argument of the factory
            raise RecipeError(f"{at(*key, 'kwargs')}: the model factory refused the kwargs: {exc}") from None
        raise RecipeError(f"{at(*key, 'source')}: building '{source}' failed: TypeError: {exc}") from None
    except Exception as exc:  # the user's factory or torchvision raising anything else
        raise RecipeError(f"{at(*key, 'source')}: building '{source}' failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise RecipeError(f"{at(*key, 'source')}: '{source}' returned {type(model).__name__}, not an nn.Module")
    if spec.get("weights"):
        state = _load_state(base / spec["weights"])
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        try:
            _load_weights(model, state, base / spec["weights"])
        except RecipeError as exc:
            raise RecipeError(f"{at(*key, 'weights')}: {exc}") from None
    return model.eval()


def _load_weights(model: nn.Module, state: Any, path: Path) -> None:
    """Load a state_dict (conforming pruned layers first); a mismatch names the file."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RecipeError(f"{path}: not a state_dict (a mapping of tensors)")
    try:
        conform_to_state_dict(model, state).load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        raise RecipeError(f"{path}: weights do not fit the model: {first_line(exc)}") from None


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
    try:
        if (root / "train").is_dir() and (root / "val").is_dir():
            train_set, test_set = datasets.ImageFolder(root / "train", tf), datasets.ImageFolder(root / "val", tf)
        else:
            full = datasets.ImageFolder(root, tf)
            if len(full) < 2:
                raise DataError(f"{root}: {len(full)} image(s); a train/test split needs at least 2")
            n_test = min(len(full) - 1, max(1, round(len(full) * spec["val_fraction"])))
            train_set, test_set = random_split(full, [len(full) - n_test, n_test],
                                               torch.Generator().manual_seed(seed))
    except (FileNotFoundError, OSError) as exc:  # no class folders, no images with known extensions
        raise DataError(f"{root}: not a usable ImageFolder ({exc})") from None
    g = torch.Generator().manual_seed(seed)
    bs = spec["batch_size"]
    return DataLoader(train_set, batch_size=bs, shuffle=True, generator=g), DataLoader(test_set, batch_size=bs)


def build_loaders(spec: dict[str, Any], base: Path, seed: int, at: KeyAt = _key) -> tuple[Any, Any]:
    """(train, test) loaders of a validated ``data:`` mapping; failures name the data key."""
    source = spec["source"]
    if source == "mnist5k":
        from compress.data import mnist5k_loaders

        return mnist5k_loaders(batch_size=spec["batch_size"], test_size=spec["test_size"], seed=seed)
    if ":" in source:
        try:
            loaders = resolve_import(source)(**spec["kwargs"])
        except RecipeError as exc:
            raise RecipeError(f"{at('data', 'source')}: {exc}") from None
        except TypeError as exc:
            if "argument" in str(exc):
                raise RecipeError(f"{at('data', 'kwargs')}: the data factory refused the kwargs: {exc}") from None
            raise DataError(f"{at('data', 'source')}: data factory '{source}' failed: TypeError: {exc}") from None
        except Exception as exc:  # the user's factory raising anything
            raise DataError(f"{at('data', 'source')}: data factory '{source}' failed: "
                            f"{type(exc).__name__}: {exc}") from None
        if not (isinstance(loaders, tuple | list) and len(loaders) == 2):
            raise DataError(f"{at('data', 'source')}: data factory '{source}' must return (train_loader, test_loader)")
        return loaders[0], loaders[1]
    try:
        return _image_folder(base / source, spec, seed)
    except DataError as exc:
        raise DataError(f"{at('data', 'source')}: {exc}") from None
