"""Recipes: a YAML file naming a model, data and stages, validated completely before any work.

The YAML is parsed into nodes first (``yaml.compose``) so every key and value keeps its
line; a :class:`RecipeError` then says ``file:line: key.path: problem``, which points a
user at the exact place to fix. Validation covers keys, types, choices, files that must
exist, import paths that must resolve and the order of stages, so a typo in the last
stage fails in a second instead of after an hour of training.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compress.errors import RecipeError
from compress.ptq import STATIC_WEIGHT_BITS
from compress.sources import (
    DATA_SOURCE_KINDS,
    check_data_source,
    check_model_source,
    factory_kwargs_problem,
    first_line,
)
from quant.weight_only import WEIGHT_ONLY_BITS

Path_ = tuple[str | int, ...]
_REQUIRED = object()
QUANTIZE_MODES = ("ptq", "qat", "dynamic", "weight_only")


# --- YAML with line numbers -------------------------------------------------------------------
MAX_RECIPE_BYTES = 1 << 20
MAX_VALUES = 20_000  # values after alias expansion: a "billion laughs" recipe is refused, not expanded
MAX_DEPTH = 64
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where present: same marks, 10x faster

Origins = dict[Path_, str]
"""Key path -> where its value was written: ``file:line`` or ``--set 'key=value'``."""


class _Composer:
    """Plain Python values from a composed YAML node, recording where each key path was written.

    Aliases are followed, but an alias that contains itself is refused (it would expand
    forever), and so is a document that expands to more than MAX_VALUES values or nests deeper
    than MAX_DEPTH."""

    def __init__(self, where: str, origins: Origins, origin_of: Callable[[yaml.Node], str] | None = None) -> None:
        self.where, self.origins, self.count = where, origins, 0
        self.origin_of = origin_of or (lambda node: f"{where}:{node.start_mark.line + 1}")
        self.active: set[int] = set()
        self.loader = yaml.SafeLoader("")

    def _scalar(self, node: yaml.Node, path: Path_) -> Any:
        try:
            return self.loader.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise RecipeError(f"{self.origin_of(node)}: {format_path(path)}: invalid value ({problem})") from None

    def convert(self, node: yaml.Node, path: Path_) -> Any:
        self.origins.setdefault(path, self.origin_of(node))
        self.count += 1
        if self.count > MAX_VALUES or len(path) > MAX_DEPTH:
            raise RecipeError(f"{self.origin_of(node)}: {format_path(path)}: the recipe expands to more than "
                              f"{MAX_VALUES} values or nests deeper than {MAX_DEPTH} (YAML aliases?)")
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self._scalar(node, path)
        if id(node) in self.active:
            raise RecipeError(f"{self.origin_of(node)}: {format_path(path)}: recursive YAML alias (an anchor "
                              "that contains itself)")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, i)) for i, item in enumerate(node.value)]
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise RecipeError(f"{self.origin_of(key_node)}: {format_path(path)}: keys must be strings")
                key = self._scalar(key_node, path)
                if not isinstance(key, str):
                    raise RecipeError(f"{self.origin_of(key_node)}: {format_path(path)}: keys must be strings")
                if key in out:
                    raise RecipeError(f"{self.origin_of(key_node)}: {format_path((*path, key))}: duplicate key")
                self.origins[(*path, key)] = self.origin_of(key_node)
                out[key] = self.convert(value_node, (*path, key))
            return out
        finally:
            self.active.discard(id(node))


# Errors found only after the parser ran past the construct that caused them (an unclosed
# bracket or quote, a key without its colon): their context mark is where the user must look.
_OPENING_CONTEXTS = ("while parsing a flow", "while scanning a quoted", "while scanning a simple key")


def _yaml_error(exc: yaml.YAMLError, where: str, text: str) -> RecipeError:
    """``file:line:column: invalid YAML: problem``, at the construct the parser was reading
    (its context mark: the unclosed bracket, the key missing its colon), not the token after."""
    context = getattr(exc, "context", None) or ""
    mark = getattr(exc, "problem_mark", None)
    if context.startswith(_OPENING_CONTEXTS) or mark is None:
        mark = getattr(exc, "context_mark", None) or mark
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:  # the reader's errors (a control character, bad UTF-8) carry a character position instead
        position = min(int(getattr(exc, "position", 0) or 0), len(text))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or first_line(exc)
    if isinstance(exc, yaml.reader.ReaderError):
        problem = f"unacceptable character #x{exc.character:04x}" if isinstance(exc.character, int) else problem
    return RecipeError(f"{where}:{line}:{column}: invalid YAML: {problem}" + (f" ({context})" if context else ""))


def compose_yaml(text: str, where: str, origins: Origins,
                 origin_of: Callable[[yaml.Node], str] | None = None, path: Path_ = ()) -> Any:
    """Parse YAML text into plain values, filling ``origins``; every failure is a RecipeError."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, where, text) from None
    except RecursionError:
        raise RecipeError(f"{where}: invalid YAML: nested too deeply") from None
    return _Composer(where, origins, origin_of).convert(root, path) if root is not None else None


def format_path(path: Path_) -> str:
    """``('stages', 1, 'quantize', 'method')`` → ``stages[1].quantize.method``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "<recipe>"


def origin(origins: Mapping[Path_, str], path: Path_, default: str) -> str:
    """Where ``path`` (or its nearest written ancestor) came from."""
    probe = path
    while probe and probe not in origins:
        probe = probe[:-1]
    return origins.get(probe, default)


def did_you_mean(word: object, options: Iterable[object]) -> str:
    """`` did you mean 'x'?`` for the closest option (difflib), or nothing when none is close."""
    names = [str(o) for o in options]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f" did you mean {close[0]!r}?" if close else ""


# --- schema -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    """The documented range of a numeric key; ``open_low`` excludes the lower bound.

    NaN fails every comparison, so it is outside every range."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def __str__(self) -> str:
        def fmt(v: float) -> str:
            return f"{v:g}" if isinstance(v, float) else str(v)

        return f"{'(' if self.open_low else '['}{fmt(self.low)}, {fmt(self.high)}{')' if self.open_high else ']'}"

    def contains(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return bool(above and below)


@dataclass(frozen=True)
class Field:
    """One key: accepted types, default (``_REQUIRED`` if none), allowed values or numeric
    range, an extra check and a one-line description for ``compress run --help``.

    ``check`` returns a problem description or None; it runs only on well-typed values."""

    types: tuple[type, ...]
    default: Any = _REQUIRED
    choices: tuple | None = None
    check: Callable[[Any, Path], str | None] | None = None
    range: Range | None = None
    help: str = ""

    def describe(self) -> str:
        """``int in [1, 1024], default 1``: what --help prints for the key."""
        names = "|".join("null" if t is type(None) else t.__name__ for t in self.types)
        text = names.replace("int|float", "number")
        if self.choices is not None:
            text = " | ".join(map(str, self.choices))
        if self.range is not None:
            text += f" in {self.range}"
        if self.default is not _REQUIRED:
            text += f", default {self.default!r}"
        else:
            text += ", required"
        return text + (f": {self.help}" if self.help else "")


def _shape(value: Any, _base: Path) -> str | None:
    ok = value is None or (
        value and len(value) <= 8
        and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 65536 for d in value)
    )
    return None if ok else f"must be a list of at most 8 integers in [1, 65536], got {value}"


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
EPOCHS = Range(1, 10_000)
LR = Range(0.0, 10.0, open_low=True)
BATCHES = Range(1, 1_000_000)
STEPS = Range(0, 1_000_000_000)

MODEL_SCHEMA: dict[str, Field] = {
    "source": Field((str,), check=_model_source, help="torchvision name, package.module:factory or a model file"),
    "kwargs": Field((dict,), {}, help="keyword arguments of the factory"),
    "weights": Field((str, type(None)), None, check=_existing_file, help="a state_dict file to load"),
    "input_shape": Field((list, type(None)), None, check=_shape, help="one sample's shape, e.g. [3, 224, 224]"),
}
DATA_SCHEMA: dict[str, Field] = {
    "source": Field((str,), check=_data_source, help="mnist5k, an ImageFolder directory or package.module:factory"),
    "batch_size": Field((int,), 64, range=Range(1, 65536)),
    "test_size": Field((int,), 1000, range=Range(1, 10_000_000)),
    "image_size": Field((int,), 224, range=Range(1, 4096), help="ImageFolder: resize and crop to this"),
    "val_fraction": Field(NUM, 0.2, range=Range(0.0, 1.0, open_high=True), help="ImageFolder without val/"),
    "kwargs": Field((dict,), {}, help="keyword arguments of a data factory"),
}
TRAIN_SCHEMA = {"epochs": Field((int,), 4, range=EPOCHS), "lr": Field(NUM, 3e-3, range=LR)}
STAGE_SCHEMAS: dict[str, dict[str, Field]] = {
    "train": TRAIN_SCHEMA,
    "fine_tune": TRAIN_SCHEMA,
    "prune": {
        "amount": Field(NUM, range=Range(0.0, 1.0, open_high=True), help="fraction of weights or channels"),
        "structured": Field((bool,), False, help="remove whole channels"),
        "importance": Field((str,), "l1", choices=("l1", "l2", "taylor", "bn_gamma")),
        "scope": Field((str,), "global", choices=("global", "layer")),
        "protect": Field((list,), [], check=_strings, help="module names never pruned"),
        "schedule": Field((str,), "oneshot", choices=("oneshot", "agp", "iterative")),
        "steps": Field((int,), 1, range=Range(1, 1000)),
        "fine_tune_epochs": Field((int,), 0, range=Range(0, 10_000)),
        "lr": Field(NUM, 3e-3, range=LR),
    },
    "distill": {
        "teacher": Field((str, dict), "before_prune", help="'before_prune' or a model mapping"),
        "loss": Field((str,), "kd", choices=("kd", "dkd")),
        "epochs": Field((int,), 3, range=EPOCHS),
        "lr": Field(NUM, 3e-3, range=LR),
    },
    "quantize": {
        "mode": Field((str,), "ptq", choices=QUANTIZE_MODES,
                      help="ptq/qat: static int8 graph; dynamic: int8 Linear/LSTM/GRU/RNN with run-time "
                           "activation scales; weight_only: 4/8-bit grouped Linear weights"),
        "method": Field((str,), "minmax", choices=("minmax", "percentile", "kl", "mse")),
        "per_channel": Field((bool,), True),
        "weight_bits": Field((int,), 8, choices=STATIC_WEIGHT_BITS),
        "weight_range": Field((str,), "full", choices=("full", "reduced"),
                              help="'reduced': 7-bit weights for ONNX Runtime on CPUs without VNNI"),
        "activation_dtype": Field((str,), "uint8", choices=("uint8", "int8")),
        "percentile": Field(NUM, 99.99, range=Range(50.0, 100.0, open_low=True)),
        "max_batches": Field(OPT_INT, 16, range=BATCHES, help="calibration batches (null: all)"),
        "skip": Field((list,), [], check=_strings, help="module names kept in float"),
        "epochs": Field((int,), 2, range=EPOCHS, help="qat only"),
        "lr": Field(NUM, 1e-3, range=LR, help="qat only"),
        "freeze_bn_after": Field(OPT_INT, None, range=STEPS, help="qat only: steps"),
        "freeze_observers_after": Field(OPT_INT, None, range=STEPS, help="qat only: steps"),
        "learnable_scales": Field((bool,), False, help="qat only"),
        "float_adds": Field((bool,), False, help="ptq: residual adds float (transformers), the Linears "
                                                 "feeding them keep their int32 accumulator"),
        "smoothquant": Field((int, float, type(None)), None, range=Range(0.0, 1.0),
                             help="ptq/dynamic: SmoothQuant alpha before quantizing (null: off)"),
        "max_drop": Field((int, float, type(None)), None, range=Range(0.0, 100.0),
                          help="ptq: accuracy control, keep the fewest layers float so test accuracy stays "
                               "within this many points of fp32 (null: off)"),
        "granularity": Field((str,), "per_tensor", choices=("per_tensor", "per_token"),
                             help="dynamic: one activation scale per tensor or per row (token)"),
        "bits": Field((int,), 4, choices=WEIGHT_ONLY_BITS, help="weight_only"),
        "group_size": Field((int,), 128, choices=(16, 32, 64, 128, 256, 512, 1024), help="weight_only"),
        "algorithm": Field((str,), "rtn", choices=("rtn", "gptq", "awq"), help="weight_only"),
        "symmetric": Field((bool,), False, help="weight_only: no zero point per group"),
    },
    "export": {
        "format": Field((str,), "qdq", choices=("qdq", "qoperator")),
        "opset": Field(OPT_INT, None, range=Range(13, 21)),
        "fp32": Field((bool,), True, help="also write the float model"),
    },
    "evaluate": {
        "accuracy": Field((bool,), True),
        "max_batches": Field(OPT_INT, None, range=BATCHES),
        "latency": Field((bool,), True),
        "latency_batch": Field((int,), 1, range=Range(1, 1024)),
        "repeats": Field((int,), 20, range=Range(1, 100_000)),
        "threads": Field((int,), 1, range=Range(1, 1024)),
    },
    "report": {"plot": Field((bool,), True)},
}
QAT_ONLY = ("epochs", "lr", "freeze_bn_after", "freeze_observers_after", "learnable_scales")
_STATIC = ("method", "per_channel", "weight_bits", "weight_range", "activation_dtype", "percentile")
# quantize keys that apply to some modes only (the others: mode, max_batches, skip apply to all)
MODE_KEYS: dict[str, tuple[str, ...]] = {
    "ptq": (*_STATIC, "float_adds", "smoothquant", "max_drop"),
    "qat": (*_STATIC, *QAT_ONLY),
    "dynamic": ("granularity", "smoothquant"),
    "weight_only": ("bits", "group_size", "algorithm", "symmetric"),
}
_MODE_SPECIFIC = {k for keys in MODE_KEYS.values() for k in keys}


def modes_of(key: str) -> list[str]:
    """The quantize modes that accept ``key``."""
    return [mode for mode, keys in MODE_KEYS.items() if key in keys]
TOP_SCHEMA: dict[str, Field] = {
    "name": Field((str, type(None)), None, help="null: the file's name"),
    "seed": Field((int,), 0, range=Range(0, 2**31 - 1)),
    "output": Field((str, type(None)), None, help="output folder; null: runs/<name>"),
    "model": Field((dict,), help="a mapping: source, kwargs, weights, input_shape"),
    "data": Field((dict,), help="a mapping: source, batch_size, ..."),
    "stages": Field((list,), help="the stages in order"),
}


def stage_schema(name: str, mode: str | None = None) -> dict[str, Field]:
    """The keys a stage accepts; a PTQ quantize stage does not offer the QAT-only keys."""
    schema = STAGE_SCHEMAS[name]
    if name == "quantize" and mode in MODE_KEYS:
        return {k: v for k, v in schema.items() if k not in _MODE_SPECIFIC or k in MODE_KEYS[mode]}
    return schema


def schema_help() -> str:
    """Every stage and key with its type, range or choices and default (``compress run --help``)."""
    lines = ["recipe keys (type in range, default):"]
    for title, schema in (("top level", TOP_SCHEMA), ("model", MODEL_SCHEMA), ("data", DATA_SCHEMA)):
        lines.append(f"  {title}:")
        lines += [f"    {k}: {f.describe()}" for k, f in schema.items()]
    lines.append("stages, in this order where present: " + ", ".join(STAGE_SCHEMAS))
    for name, schema in STAGE_SCHEMAS.items():
        lines.append(f"  {name}:")
        lines += [f"    {k}: {f.describe()}" for k, f in schema.items()]
    return "\n".join(lines)


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
    origins: Origins = field(repr=False, default_factory=dict)

    @property
    def base(self) -> Path:
        return self.source.parent

    def at(self, *path: str | int) -> str:
        """``file:line: key.path`` (or ``--set '...': key.path``): the prefix of an error about a key."""
        return f"{origin(self.origins, path, str(self.source))}: {format_path(path)}"

    def fingerprint(self) -> str:
        """Hash of everything that affects results; a checkpoint only resumes the same recipe."""
        text = json.dumps(self.raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Validator:
    """Walks the Python tree with the origin map, collecting values with defaults filled in."""

    def __init__(self, where: str, origins: Origins, base: Path) -> None:
        self.where, self.origins, self.base = where, origins, base

    def error(self, path: Path_, problem: str) -> RecipeError:
        return RecipeError(f"{origin(self.origins, path, f'{self.where}:1')}: {format_path(path)}: {problem}")

    def mapping(self, value: Any, schema: Mapping[str, Field], path: Path_) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, f"must be a mapping, got {type(value).__name__}")
        unknown = [k for k in value if k not in schema]
        if unknown:
            hint = did_you_mean(unknown[0], schema)
            raise self.error((*path, unknown[0]), f"unknown key;{hint} expected one of {sorted(schema)}")
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
            hint = did_you_mean(value, spec.choices)
            raise self.error(path, f"unknown value {value!r};{hint} choose one of {list(spec.choices)}")
        if spec.range is not None and value is not None and not spec.range.contains(value):
            raise self.error(path, f"must be in {spec.range}, got {value!r}")
        if spec.check is not None and (problem := spec.check(value, self.base)):
            raise self.error(path, problem)
        return value

    def kwargs(self, spec: dict[str, Any], path: Path_) -> None:
        """The factory must accept the recipe's kwargs: a mismatch is an error on that key."""
        problem = factory_kwargs_problem(spec["source"], spec["kwargs"])
        if problem is not None:
            key, text = problem
            raise self.error((*path, "kwargs", key) if key else (*path, "kwargs"), text)

    def stage(self, item: Any, index: int) -> Stage:
        path: Path_ = ("stages", index)
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            raise self.error(path, "each stage is a mapping with one key, the stage name, e.g. '- train: {epochs: 2}'")
        (name, options), = item.items()
        if name not in STAGE_SCHEMAS:
            hint = did_you_mean(name, STAGE_SCHEMAS)
            raise self.error((*path, name), f"unknown stage;{hint} choose one of {list(STAGE_SCHEMAS)}")
        given = {} if options is None else options
        mode = given.get("mode", "ptq") if isinstance(given, dict) else None
        if name == "quantize" and mode in MODE_KEYS:
            if extra := [k for k in given if k in _MODE_SPECIFIC and k not in MODE_KEYS[mode]]:
                raise self.error((*path, name, extra[0]), f"only applies to mode: {', '.join(modes_of(extra[0]))}")
        opts = self.mapping(given, stage_schema(name, mode if isinstance(mode, str) else None), (*path, name))
        if name == "distill" and isinstance(opts["teacher"], dict):
            opts["teacher"] = self.mapping(opts["teacher"], MODEL_SCHEMA, (*path, name, "teacher"))
            self.kwargs(opts["teacher"], (*path, name, "teacher"))
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
            if st.name == "export" and st.options["format"] != "qdq":
                mode = stages[seen["quantize"]].options["mode"]
                if mode in ("dynamic", "weight_only"):
                    raise self.error((*path, "format"), f"quantize mode {mode!r} exports its own operator form "
                                     "(MatMulInteger / MatMulNBits): leave format at 'qdq'")
            if st.name == "distill" and st.options["teacher"] == "before_prune" and "prune" not in seen:
                raise self.error((*path, "teacher"), "'before_prune' needs a prune stage before distill")
            if st.name == "report" and "evaluate" not in seen:
                raise self.error(path, "report needs an evaluate stage before it")
            seen.setdefault(st.name, st.index)


# --- --set overrides ------------------------------------------------------------------------
def parse_set(assignments: list[str]) -> list[tuple[Path_, Any, str]]:
    """``--set stages.1.quantize.method=kl`` → ((stages, 1, quantize, method), 'kl', origin).

    Values are YAML (``--set model.kwargs={width: 8}``); every problem names the --set argument."""
    out = []
    for item in assignments:
        at = f"--set {item!r}"
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"{at}: expected key.path=value")
        parts: list[str | int] = []
        for part in key.strip().replace("[", ".").replace("]", "").split("."):
            if not part:
                raise RecipeError(f"{at}: empty part in key path")
            parts.append(int(part) if part.isascii() and part.isdigit() else part)
        scratch: Origins = {}
        value = compose_yaml(text, at, scratch, origin_of=lambda _node, at=at: at, path=tuple(parts)) if text else None
        out.append((tuple(parts), value, at))
    return out


def apply_overrides(tree: dict[str, Any], overrides: list[tuple[Path_, Any, str]], origins: Origins) -> None:
    """Set each value in place; intermediate mappings are created, list indices must exist.
    The overridden key, and everything under it, is attributed to its --set argument."""
    for path, value, at in overrides:
        node: Any = tree
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                if not isinstance(part, int) or not 0 <= part < len(node):
                    raise RecipeError(f"{at}: no list item {part!r} at {format_path(path[:i])}")
                node = node[part]
            elif isinstance(node, dict):
                if node.get(part) is None:
                    node[part] = {}
                    origins[path[: i + 1]] = at
                node = node[part]
            else:
                raise RecipeError(f"{at}: {format_path(path[:i])} is not a mapping or list")
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or not 0 <= last < len(node):
                raise RecipeError(f"{at}: no list item {last!r} at {format_path(path[:-1])}")
        elif not isinstance(node, dict):
            raise RecipeError(f"{at}: {format_path(path[:-1])} is not a mapping or list")
        node[last] = value
        for stale in [p for p in origins if p[: len(path)] == path]:
            del origins[stale]
        origins[path] = at


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raises RecipeError with key path and line."""
    source = Path(path)
    if not source.is_file():
        raise RecipeError(f"recipe not found: {source}")
    where = str(source)
    try:
        if source.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{where}: larger than {MAX_RECIPE_BYTES} bytes; not a recipe")
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{where}: cannot be read as UTF-8 text ({exc})") from None
    origins: Origins = {}
    tree = compose_yaml(text, where, origins)
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        at = origin(origins, (), where + ":1")
        raise RecipeError(f"{at}: <recipe>: must be a mapping, got {type(tree).__name__}")
    apply_overrides(tree, parse_set(overrides or []), origins)
    v = _Validator(where, origins, source.parent)
    top = v.mapping(tree, TOP_SCHEMA, ())
    model = v.mapping(top["model"], MODEL_SCHEMA, ("model",))
    v.kwargs(model, ("model",))
    data = v.mapping(top["data"], DATA_SCHEMA, ("data",))
    if ":" in data["source"]:
        v.kwargs(data, ("data",))
    if not top["stages"]:
        raise v.error(("stages",), "needs at least one stage")
    stages = [v.stage(item, i) for i, item in enumerate(top["stages"])]
    v.order(stages)
    return Recipe(
        source=source, name=top["name"] or source.stem, seed=top["seed"], output=top["output"],
        model=model, data=data, stages=stages, raw=tree, origins=origins,
    )


__all__ = ["DATA_SOURCE_KINDS", "Recipe", "Stage", "format_path", "load_recipe", "parse_set", "schema_help"]
