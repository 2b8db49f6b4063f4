"""Recipes: a YAML file naming a model, data and stages, validated completely before any work.

The YAML is parsed into nodes first (``yaml.compose``) so every key and value keeps its
line; a :class:`RecipeError` then says ``file:line: key.path: problem``, which points a
user at the exact place to fix. Validation covers keys, types, choices, files that must
exist, import paths that must resolve and the order of stages, so a typo in the last
stage fails in a second instead of after an hour of training.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compress.errors import RecipeError
from compress.sources import DATA_SOURCE_KINDS, check_data_source, check_model_source

Path_ = tuple[str | int, ...]
_REQUIRED = object()


# --- YAML with line numbers -------------------------------------------------------------------
def _to_python(node: yaml.Node, path: Path_, lines: dict[Path_, int], where: str) -> Any:
    """Plain Python values from a composed node, recording each path's 1-based line."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader("").construct_object(key_node)
            if not isinstance(key, str):
                raise RecipeError(f"{where}:{key_node.start_mark.line + 1}: {format_path(path)}: keys must be strings")
            if key in out:
                raise RecipeError(f"{where}:{key_node.start_mark.line + 1}: {format_path((*path, key))}: duplicate key")
            out[key] = _to_python(value_node, (*path, key), lines, where)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, (*path, i), lines, where) for i, item in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node)


def format_path(path: Path_) -> str:
    """``('stages', 1, 'quantize', 'method')`` → ``stages[1].quantize.method``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "<recipe>"


# --- schema -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One key: accepted types, default (``_REQUIRED`` if none), allowed values, extra check.

    ``check`` returns a problem description or None; it runs only on well-typed values.
    """

    types: tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple | None = None
    check: Callable[[Any, Path], str | None] | None = None


def _positive(value: Any, _base: Path) -> str | None:
    return None if value is None or value > 0 else f"must be > 0, got {value}"


def _non_negative(value: Any, _base: Path) -> str | None:
    return None if value is None or value >= 0 else f"must be ≥ 0, got {value}"


def _fraction(value: Any, _base: Path) -> str | None:
    return None if 0.0 <= value < 1.0 else f"must be in [0, 1), got {value}"


def _percent(value: Any, _base: Path) -> str | None:
    return None if 50 < value <= 100 else f"must be in (50, 100], got {value}"


def _shape(value: Any, _base: Path) -> str | None:
    ok = value is None or (value and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value))
    return None if ok else f"must be a list of positive integers, got {value}"


def _strings(value: Any, _base: Path) -> str | None:
    return None if all(isinstance(v, str) for v in value) else f"must be a list of strings, got {value}"


def _model_source(value: Any, base: Path) -> str | None:
    return check_model_source(value, base)


def _data_source(value: Any, base: Path) -> str | None:
    return check_data_source(value, base)


def _existing_file(value: Any, base: Path) -> str | None:
    if value is None:
        return None
    return None if (base / value).is_file() else f"file not found: {base / value}"


NUM = (int, float)
OPT_INT = (int, type(None))

MODEL_SCHEMA: dict[str, Field] = {
    "source": Field((str,), check=_model_source),
    "kwargs": Field((dict,), {}),
    "weights": Field((str, type(None)), None, check=_existing_file),
    "input_shape": Field((list, type(None)), None, check=_shape),
}
DATA_SCHEMA: dict[str, Field] = {
    "source": Field((str,), check=_data_source),
    "batch_size": Field((int,), 64, check=_positive),
    "test_size": Field((int,), 1000, check=_positive),
    "image_size": Field((int,), 224, check=_positive),
    "val_fraction": Field(NUM, 0.2, check=_fraction),
    "kwargs": Field((dict,), {}),
}
TRAIN_SCHEMA = {"epochs": Field((int,), 4, check=_positive), "lr": Field(NUM, 3e-3, check=_positive)}
STAGE_SCHEMAS: dict[str, dict[str, Field]] = {
    "train": TRAIN_SCHEMA,
    "fine_tune": TRAIN_SCHEMA,
    "prune": {
        "amount": Field(NUM, check=_fraction),
        "structured": Field((bool,), False),
        "importance": Field((str,), "l1", choices=("l1", "l2", "taylor", "bn_gamma")),
        "scope": Field((str,), "global", choices=("global", "layer")),
        "protect": Field((list,), [], check=_strings),
        "schedule": Field((str,), "oneshot", choices=("oneshot", "agp", "iterative")),
        "steps": Field((int,), 1, check=_positive),
        "fine_tune_epochs": Field((int,), 0, check=_non_negative),
        "lr": Field(NUM, 3e-3, check=_positive),
    },
    "distill": {
        "teacher": Field((str, dict), "before_prune"),
        "loss": Field((str,), "kd", choices=("kd", "dkd")),
        "epochs": Field((int,), 3, check=_positive),
        "lr": Field(NUM, 3e-3, check=_positive),
    },
    "quantize": {
        "mode": Field((str,), "ptq", choices=("ptq", "qat")),
        "method": Field((str,), "minmax", choices=("minmax", "percentile", "kl", "mse")),
        "per_channel": Field((bool,), True),
        "weight_bits": Field((int,), 8, choices=tuple(range(2, 9))),
        "weight_range": Field((str,), "full", choices=("full", "reduced")),
        "activation_dtype": Field((str,), "uint8", choices=("uint8", "int8")),
        "percentile": Field(NUM, 99.99, check=_percent),
        "max_batches": Field(OPT_INT, 16, check=_positive),
        "skip": Field((list,), [], check=_strings),
        "epochs": Field((int,), 2, check=_positive),
        "lr": Field(NUM, 1e-3, check=_positive),
        "freeze_bn_after": Field(OPT_INT, None, check=_non_negative),
        "freeze_observers_after": Field(OPT_INT, None, check=_non_negative),
        "learnable_scales": Field((bool,), False),
    },
    "export": {
        "format": Field((str,), "qdq", choices=("qdq", "qoperator")),
        "opset": Field(OPT_INT, None, check=lambda v, _b: None if v is None or 13 <= v <= 21 else "must be in 13..21"),
        "fp32": Field((bool,), True),
    },
    "evaluate": {
        "accuracy": Field((bool,), True),
        "max_batches": Field(OPT_INT, None, check=_positive),
        "latency": Field((bool,), True),
        "latency_batch": Field((int,), 1, check=_positive),
        "repeats": Field((int,), 20, check=_positive),
        "threads": Field((int,), 1, check=_positive),
    },
    "report": {"plot": Field((bool,), True)},
}
QAT_ONLY = ("epochs", "lr", "freeze_bn_after", "freeze_observers_after", "learnable_scales")
TOP_SCHEMA: dict[str, Field] = {
    "name": Field((str, type(None)), None),
    "seed": Field((int,), 0),
    "output": Field((str, type(None)), None),
    "model": Field((dict,)),
    "data": Field((dict,)),
    "stages": Field((list,)),
}


# --- the validated recipe -------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One validated stage: its name, options with defaults filled in, and its position."""

    name: str
    options: dict[str, Any]
    index: int


@dataclass
class Recipe:
    """A validated recipe; paths inside it are resolved against the recipe's folder."""

    source: Path
    name: str
    seed: int
    output: str | None
    model: dict[str, Any]
    data: dict[str, Any]
    stages: list[Stage]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def base(self) -> Path:
        return self.source.parent

    def fingerprint(self) -> str:
        """Hash of everything that affects results; a checkpoint only resumes the same recipe."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Validator:
    """Walks the Python tree with the line map, collecting values with defaults filled in."""

    def __init__(self, where: str, lines: Mapping[Path_, int], base: Path) -> None:
        self.where, self.lines, self.base = where, lines, base

    def error(self, path: Path_, problem: str) -> RecipeError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        return RecipeError(f"{self.where}:{line}: {format_path(path)}: {problem}")

    def mapping(self, value: Any, schema: Mapping[str, Field], path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, got {type(value).__name__}")
        unknown = [k for k in value if k not in schema]
        if unknown:
            raise self.error((*path, unknown[0]), f"unknown key; expected one of {sorted(schema)}")
        out: dict[str, Any] = {}
        for key, spec in schema.items():
            if key not in value:
                if spec.default is _REQUIRED:
                    raise self.error(path, f"missing required key '{key}'")
                out[key] = copy.deepcopy(spec.default)
                continue
            out[key] = self.value(value[key], spec, (*path, key))
        return out

    def value(self, value: Any, spec: Field, path: Path_) -> Any:
        ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in spec.types)
            raise self.error(path, f"must be {names}, got {type(value).__name__} {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise self.error(path, f"unknown value {value!r}; choose one of {list(spec.choices)}")
        if spec.check is not None and (problem := spec.check(value, self.base)):
            raise self.error(path, problem)
        return value

    def stage(self, item: Any, index: int) -> Stage:
        path: Path_ = ("stages", index)
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            raise self.error(path, "each stage is a mapping with one key, the stage name, e.g. '- train: {epochs: 2}'")
        (name, options), = item.items()
        if name not in STAGE_SCHEMAS:
            raise self.error((*path, name), f"unknown stage; choose one of {list(STAGE_SCHEMAS)}")
        opts = self.mapping({} if options is None else options, STAGE_SCHEMAS[name], (*path, name))
        if name == "quantize" and opts["mode"] == "ptq":
            given = options or {}
            if extra := [k for k in QAT_ONLY if k in given]:
                raise self.error((*path, name, extra[0]), "only applies to mode: qat")
        if name == "distill" and isinstance(opts["teacher"], dict):
            opts["teacher"] = self.mapping(opts["teacher"], MODEL_SCHEMA, (*path, name, "teacher"))
        elif name == "distill" and opts["teacher"] != "before_prune":
            raise self.error((*path, name, "teacher"), "must be 'before_prune' or a model mapping (source, ...)")
        return Stage(name, opts, index)

    def order(self, stages: list[Stage]) -> None:
        """Stages follow the flow of DESIGN.md §1; anything else is a mistake worth a line number."""
        seen: dict[str, int] = {}
        for st in stages:
            path: Path_ = ("stages", st.index, st.name)
            if st.name in ("train", "fine_tune", "prune", "distill") and "quantize" in seen:
                raise self.error(path, "float training stages must come before quantize (use quantize mode: qat)")
            if st.name == "quantize" and "quantize" in seen:
                raise self.error(path, "only one quantize stage per recipe")
            if st.name == "export" and "quantize" not in seen:
                raise self.error(path, "export needs a quantize stage before it")
            if st.name == "distill" and st.options["teacher"] == "before_prune" and "prune" not in seen:
                raise self.error((*path, "teacher"), "'before_prune' needs a prune stage before distill")
            if st.name == "report" and "evaluate" not in seen:
                raise self.error(path, "report needs an evaluate stage before it")
            seen.setdefault(st.name, st.index)


def parse_set(assignments: list[str]) -> list[tuple[Path_, Any]]:
    """``--set stages.1.quantize.method=kl`` → ((stages, 1, quantize, method), 'kl'); values are YAML."""
    out = []
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set {item!r}: expected key.path=value")
        parts: list[str | int] = []
        for part in key.replace("[", ".").replace("]", "").split("."):
            if not part:
                raise RecipeError(f"--set {item!r}: empty part in key path")
            parts.append(int(part) if part.isdigit() else part)
        out.append((tuple(parts), yaml.safe_load(text) if text else None))
    return out


def apply_overrides(tree: dict[str, Any], overrides: list[tuple[Path_, Any]], lines: dict[Path_, int]) -> None:
    """Set each value in place; intermediate mappings are created, list indices must exist."""
    for path, value in overrides:
        node: Any = tree
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not isinstance(part, int) or not 0 <= part < len(node):
                    raise RecipeError(f"--set {format_path(path)}: no list item {part!r} at {format_path(path[:i])}")
                node = node[part]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise RecipeError(f"--set {format_path(path)}: {format_path(path[:i])} is not a mapping or list")
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or not 0 <= last < len(node):
                raise RecipeError(f"--set {format_path(path)}: no list item {last!r}")
        elif not isinstance(node, dict):
            raise RecipeError(f"--set {format_path(path)}: parent is not a mapping or list")
        node[last] = value
        lines.setdefault(path, lines.get(path[:-1], 1))


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError with key path and line."""
    source = Path(path)
    if not source.is_file():
        raise RecipeError(f"recipe not found: {source}")
    where = str(source)
    try:
        root = yaml.compose(source.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{where}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    lines: dict[Path_, int] = {}
    tree = _to_python(root, (), lines, where) if root is not None else {}
    apply_overrides(tree, parse_set(overrides or []), lines)
    v = _Validator(where, lines, source.parent)
    top = v.mapping(tree, TOP_SCHEMA, ())
    model = v.mapping(top["model"], MODEL_SCHEMA, ("model",))
    data = v.mapping(top["data"], DATA_SCHEMA, ("data",))
    if not top["stages"]:
        raise v.error(("stages",), "needs at least one stage")
    stages = [v.stage(item, i) for i, item in enumerate(top["stages"])]
    v.order(stages)
    return Recipe(
        source=source, name=top["name"] or source.stem, seed=top["seed"], output=top["output"],
        model=model, data=data, stages=stages, raw=tree,
    )


__all__ = ["DATA_SOURCE_KINDS", "Recipe", "Stage", "format_path", "load_recipe", "parse_set"]
