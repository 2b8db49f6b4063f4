"""Op registry keyed by (domain, ONNX op type): one :class:`OpSpec` per op, the unit that owns
the op's facts, the way the ONNX reference implementation's ``OpRun`` classes do.

An op's facts are its kernel factory, its schema defaults, whether its output keeps the
quantization grid of its input, how DequantizeLinear -> op -> QuantizeLinear folds into an
integer op, and whether a following Relu/Clip may be fused into it.  The passes
(``runtime/passes``) and the load-time validation ask the op for these facts instead of keeping
lists of op names of their own.

A factory receives the node (its attributes completed with the schema defaults), the graph (to
read constant inputs once: weights are packed here, at load, not per call) and the run options,
and returns a callable mapping input arrays (None for omitted optional inputs) to the list of
output arrays."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper

from runtime.errors import InferenceError
from runtime.graph import Graph, Node

Compute = Callable[..., Sequence[np.ndarray]]
Factory = Callable[[Node, Graph, "RunOptions"], Compute]

Grid = Literal["integer", "keeps", "requantizes", "float"]
"""How an op relates to quantization grids (DESIGN.md §5's policy):
``integer`` computes on codes with its own requantization (QLinearConv, QGemm, ...);
``keeps`` returns values of its input's grid, so it may run on the codes directly (MaxPool,
Reshape, ...); ``requantizes`` needs a new rounding (average pools); ``float`` runs in float
between DequantizeLinear and QuantizeLinear."""


@dataclass(frozen=True)
class QdqFold:
    """How ``DQ -> op -> Q`` becomes one integer op.

    ``rule`` names the rewrite mechanism in ``runtime/passes/fold_qdq.py`` (``conv``,
    ``gemm``, ``matmul``, ``elementwise``, ``concat``); ``target`` is the integer op it
    produces; ``activations`` the number of leading quantized inputs (elementwise rule)."""

    rule: str
    target: tuple[str, str]
    activations: int = 1


@dataclass(frozen=True)
class RunOptions:
    """What every kernel may need besides its node: threads and a forced ISA path."""

    threads: int = 1
    isa: str | None = None


@dataclass(frozen=True)
class OpSpec:
    """One op: its kernel factory and the facts the passes and the validation ask for."""

    domain: str
    op_type: str
    factory: Factory
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """The op's own defaults on top of ONNX's schema (com.microsoft ops have no schema)."""
    grid: Grid | None = None
    fold: QdqFold | None = None
    fuses_clamp: bool = False
    choices: Mapping[str, tuple] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.op_type)

    def schema_defaults(self, opset: int | None = None) -> dict[str, Any]:
        """Attribute defaults at an opset version (latest when None): ONNX's schema, then the op's own."""
        return {**schema_defaults(self.op_type, self.domain, opset), **self.defaults}

    def attrs(self, node: Node, opset: int | None = None) -> dict[str, Any]:
        """The node's attributes completed with the defaults of the model's opset (Softmax's
        axis, for one, changed its default at opset 13)."""
        return {**self.schema_defaults(opset), **node.attrs}

    def check_choices(self, node: Node, opset: int | None = None) -> str | None:
        """A message naming the first attribute whose value the kernel does not implement."""
        attrs = self.attrs(node, opset)
        for name, allowed in self.choices.items():
            if name in attrs and attrs[name] not in allowed:
                return f"attribute {name}={attrs[name]!r} is not supported (supported: {list(allowed)})"
        return None


_REGISTRY: dict[tuple[str, str], OpSpec] = {}


@functools.cache
def _schema_defaults(op_type: str, domain: str, opset: int | None) -> MappingProxyType:
    try:
        if opset is None:
            schema = onnx.defs.get_schema(op_type, domain=domain)
        else:
            schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return MappingProxyType({})
    out: dict[str, Any] = {}
    for name, attr in schema.attributes.items():
        if attr.default_value is not None and attr.default_value.type:
            value = helper.get_attribute_value(attr.default_value)
            if isinstance(value, list):
                value = [v.decode() if isinstance(v, bytes) else v for v in value]
            out[name] = value.decode() if isinstance(value, bytes) else value
    return MappingProxyType(out)


def schema_defaults(op_type: str, domain: str = "", opset: int | None = None) -> dict[str, Any]:
    """Attribute defaults from ONNX's own schema of the op at an opset version (latest when
    None), the one place these facts are written down; empty for ops ONNX does not define."""
    return dict(_schema_defaults(op_type, domain, opset))


def register(
    *op_types: str,
    domain: str = "",
    defaults: Mapping[str, Any] | None = None,
    grid: Grid | None = None,
    fold: QdqFold | None = None,
    fuses_clamp: bool = False,
    choices: Mapping[str, tuple] | None = None,
) -> Callable[[Factory], Factory]:
    """Registers a kernel factory with its facts for one or more op types of one domain.

    ``defaults`` adds to (or overrides) the defaults read from ONNX's schema; ``choices``
    lists, per attribute, the values the kernel implements (the validation asks)."""

    def add(factory: Factory) -> Factory:
        for op in op_types:
            _REGISTRY[(domain, op)] = OpSpec(
                domain,
                op,
                factory,
                MappingProxyType(dict(defaults or {})),
                grid,
                fold,
                fuses_clamp,
                MappingProxyType(dict(choices or {})),
            )
        return factory

    return add


def spec(node_or_key: Node | tuple[str, str]) -> OpSpec | None:
    """The op's unit, or None when the runtime does not implement it."""
    key = node_or_key.key if isinstance(node_or_key, Node) else node_or_key
    return _REGISTRY.get(key)


def specs() -> list[OpSpec]:
    """Every registered op (the backend test derives its include list from this)."""
    return list(_REGISTRY.values())


def lookup(node: Node) -> Factory | None:
    """The node's kernel factory, applying its schema defaults (None when unsupported)."""
    op = _REGISTRY.get(node.key)
    if op is None:
        return None
    return lambda n, graph, opts: op.factory(
        dataclasses.replace(n, attrs=op.attrs(n, graph.opsets.get(op.domain))), graph, opts
    )


def is_supported(node: Node) -> bool:
    return node.key in _REGISTRY


def elementwise(fn: Callable[..., np.ndarray]) -> Factory:
    """Factory for ops whose output is fn(*inputs) with no attributes."""
    return lambda node, graph, opts: lambda *xs: [fn(*xs)]


def build(node: Node, graph: Graph, opts: RunOptions) -> Compute:
    """The node's compute function, after checking its attribute values against the op's
    ``choices`` (a named error instead of a wrong answer).  An fp32 node that kept a fused Relu/Clip (it was not
    folded into an integer op) applies the clamp to its output here; integer ops apply
    theirs as saturation bounds themselves."""
    op = _REGISTRY[node.key]
    if problem := op.check_choices(node, graph.opsets.get(op.domain)):
        raise InferenceError(f"{graph.source}: {node.describe()}: {problem}")
    compute = lookup(node)(node, graph, opts)
    lo, hi = node.attrs.get("fused_min"), node.attrs.get("fused_max")
    if not op.fuses_clamp or (lo is None and hi is None):
        return compute

    def clamped(*xs):
        y = compute(*xs)
        return [np.clip(y[0], lo, hi).astype(y[0].dtype, copy=False), *y[1:]]

    return clamped
