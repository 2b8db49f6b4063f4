"""The runtime's door: every check a model must pass before any kernel is built.

A hostile or corrupt file must end in an :class:`InferenceError` that names the node, tensor
and op type at fault, never in a traceback from protobuf, onnx or numpy, an allocation the
machine cannot hold, or a loop that does not end.  The checks here run on the protobuf
before anything is converted, so a tensor that claims 2**40 elements is refused before
numpy is asked for it:

- every initializer (and tensor attribute): a numeric element type, non-negative dims, data
  whose stored length matches the dims, a size under the memory limit;
- every node the runtime supports: ONNX's own schema check (arity, attribute types), then
  attribute values in range, constant scales finite and positive, zero points of an integer
  type of the same shape as their scale;
- the graph: one producer per tensor, every graph output produced, shapes and ranks
  consistent (ONNX shape inference in strict mode), every inferred tensor under the limit.

The memory limit is per tensor and for the sum of the constants; the default is
:data:`DEFAULT_MEMORY_LIMIT`, ``$COMPRESS_RUNTIME_MEMORY_LIMIT`` (bytes) overrides it and
``InferenceSession(memory_limit=...)`` overrides both.  Tensors whose size depends on the
inputs are checked again at run time, once per distinct input shape (:class:`RunShapeCheck`).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from runtime.errors import InferenceError, UnsupportedOpError
from runtime.graph import Graph, topological_order
from runtime.ops import registry
from runtime.qmath import QRANGE

DEFAULT_MEMORY_LIMIT = 4 << 30
MEMORY_LIMIT_ENV = "COMPRESS_RUNTIME_MEMORY_LIMIT"
MAX_NODES = 1_000_000
MAX_RANK = 16
MAX_DIM = 1 << 40  # no real tensor has a longer axis; longer ones overflow int64 products in a kernel

# Element types the runtime can hold in numpy (strings, complex and the 4-bit/8-bit float
# formats have no kernel anywhere in the runtime).
_NUMERIC = {
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
    TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32,
    TensorProto.INT64, TensorProto.UINT64, TensorProto.BOOL, TensorProto.INT4, TensorProto.UINT4,
}
# 4-bit types: stored two to a byte (raw_data, or int32_data entries each holding one byte);
# the loader widens them to int8/uint8, one byte per element.
PACKED_4BIT = {TensorProto.INT4: np.int8, TensorProto.UINT4: np.uint8}
# The typed field each element type is stored in when raw_data is absent (ONNX's TensorProto rules).
_TYPED_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data", TensorProto.INT64: "int64_data",
    TensorProto.UINT32: "uint64_data", TensorProto.UINT64: "uint64_data",
}
# ONNX attributes whose every value must be positive / non-negative, whatever the op (the
# spec gives them one meaning everywhere: window sizes, strides, dilations, paddings).
_POSITIVE_ATTRS = ("kernel_shape", "strides", "dilations", "group")
_NON_NEGATIVE_ATTRS = ("pads",)
_MAX_WINDOW = 1 << 16


def memory_limit(given: int | None = None) -> int:
    """The byte limit in force: the argument, else $COMPRESS_RUNTIME_MEMORY_LIMIT, else the default."""
    if given is None:
        text = os.environ.get(MEMORY_LIMIT_ENV)
        if not text:
            return DEFAULT_MEMORY_LIMIT
        try:
            given = int(text)
        except ValueError:
            raise InferenceError(f"${MEMORY_LIMIT_ENV}={text!r}: expected a number of bytes") from None
    if isinstance(given, bool) or not isinstance(given, int | np.integer) or given <= 0:
        raise InferenceError(f"memory_limit must be a positive number of bytes, got {given!r}")
    return int(given)


def _itemsize(elem_type: int) -> int:
    if elem_type in PACKED_4BIT:
        return 1
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize


def _describe(node: onnx.NodeProto, index: int) -> str:
    domain = f"{node.domain}::" if node.domain not in ("", "ai.onnx") else ""
    return f"node {node.name or f'{node.op_type}_{index}'!r} ({domain}{node.op_type})"


def parse_model(data: bytes, source: str) -> onnx.ModelProto:
    """Protobuf bytes → ModelProto; a decode failure is a named error, not a DecodeError."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InferenceError(f"{source}: not a readable ONNX model ({exc})") from None
    if not model.HasField("graph"):
        raise InferenceError(f"{source}: not an ONNX model (no graph)")
    return model


def check_tensor(t: TensorProto, where: str, limit: int) -> int:
    """Checks one stored tensor against what numpy will be asked to build; returns its bytes."""
    if t.data_type not in _NUMERIC:
        name = TensorProto.DataType.Name(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type
        raise InferenceError(f"{where}: element type {name} is not supported")
    dims = list(t.dims)
    if len(dims) > MAX_RANK or any(d < 0 or d > MAX_DIM for d in dims):
        raise InferenceError(f"{where}: invalid dims {dims}")
    count = math.prod(dims)
    size = count * _itemsize(t.data_type)
    if size > limit:
        raise InferenceError(f"{where}: {size} bytes (dims {dims}) exceed the memory limit of {limit} bytes")
    if t.data_location == TensorProto.EXTERNAL:
        return size  # read and checked against its file by the loader
    if t.segment.end or t.segment.begin:
        raise InferenceError(f"{where}: segmented tensors are not supported")
    packed = (count + 1) // 2 if t.data_type in PACKED_4BIT else count
    if t.HasField("raw_data"):
        stored, need = len(t.raw_data), packed if t.data_type in PACKED_4BIT else size
        if stored != need:
            raise InferenceError(f"{where}: raw data holds {stored} bytes, dims {dims} need {need}")
        return size
    field = _TYPED_FIELD.get(t.data_type, "int32_data")
    stored = len(getattr(t, field))
    if stored != packed:
        raise InferenceError(f"{where}: {field} holds {stored} values, dims {dims} need {count}")
    return size


def _checker_context(model: onnx.ModelProto) -> onnx.checker.C.CheckerContext:
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = model.ir_version or onnx.IR_VERSION
    ctx.opset_imports = {o.domain: o.version for o in model.opset_import}
    return ctx


def _ints(value: object) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]  # type: ignore[arg-type]


def _check_attributes(node: onnx.NodeProto, where: str, limit: int) -> None:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR:
            check_tensor(attr.t, f"{where}: attribute {attr.name!r}", limit)
        elif attr.type == onnx.AttributeProto.GRAPH or attr.type == onnx.AttributeProto.GRAPHS:
            raise InferenceError(f"{where}: attribute {attr.name!r} holds a subgraph; control flow is not supported")
        if attr.name in _POSITIVE_ATTRS + _NON_NEGATIVE_ATTRS and attr.type in (
            onnx.AttributeProto.INT, onnx.AttributeProto.INTS
        ):
            values = list(attr.ints) if attr.type == onnx.AttributeProto.INTS else [attr.i]
            low = 1 if attr.name in _POSITIVE_ATTRS else 0
            if any(v < low or v > _MAX_WINDOW for v in values):
                raise InferenceError(
                    f"{where}: attribute {attr.name!r} = {values} is out of range [{low}, {_MAX_WINDOW}]"
                )


def _const_array(name: str, tensors: Mapping[str, TensorProto]) -> np.ndarray | None:
    t = tensors.get(name)
    if t is None or t.data_location == TensorProto.EXTERNAL:
        return None
    try:
        a = onnx.numpy_helper.to_array(t)
        return a.astype(PACKED_4BIT[t.data_type]) if t.data_type in PACKED_4BIT else a
    except Exception as exc:  # checked above, so this is the helper's own limit
        raise InferenceError(f"tensor {name!r}: cannot be read ({exc})") from None


def _formal_inputs(node: onnx.NodeProto, opset: int) -> list[str]:
    """The names ONNX gives a node's input positions, or the op unit's own ``input_names``
    where it declares them (com.microsoft ops have no ONNX schema)."""
    own = getattr(registry.spec(_key(node)), "input_names", None)
    if own:
        return list(own)
    if node.domain not in ("", "ai.onnx"):
        return []
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return []
    names = [p.name for p in schema.inputs]
    if schema.inputs and schema.inputs[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        names += [names[-1]] * max(0, len(node.input) - len(names))
    return names


def _check_quant_params(node: onnx.NodeProto, where: str, opset: int, tensors: Mapping[str, TensorProto]) -> None:
    """Scales finite and positive, zero points of an 8/16/32-bit integer type shaped like their scale."""
    formal = _formal_inputs(node, opset)
    for pos, (name, role) in enumerate(zip(node.input, formal, strict=False)):
        if not name:
            continue
        if role.endswith("_scale"):  # x_scale, w_scale, y_scale: not a normalization's gamma ("scale")
            s = _const_array(name, tensors)
            if s is None:
                continue
            if s.dtype.kind != "f":
                raise InferenceError(f"{where}: scale {name!r} must be a float tensor, got {s.dtype}")
            if not (np.isfinite(s).all() and (s > 0).all()):
                raise InferenceError(f"{where}: scale {name!r} must be finite and > 0 (got {s.reshape(-1)[:4]})")
            zp_pos = pos + 1
            if zp_pos < len(node.input) and zp_pos < len(formal) and formal[zp_pos].endswith("_zero_point"):
                z = _const_array(node.input[zp_pos], tensors)
                if z is not None and z.size != s.size:
                    raise InferenceError(
                        f"{where}: zero point {node.input[zp_pos]!r} has {z.size} values, scale {name!r} {s.size}"
                    )
        elif role.endswith("_zero_point"):
            z = _const_array(name, tensors)
            if z is not None and z.dtype not in QRANGE:
                raise InferenceError(f"{where}: zero point {name!r} must be an integer tensor, got {z.dtype}")


def _key(node: onnx.NodeProto) -> tuple[str, str]:
    """The op registry's key of a node (``ai.onnx`` spelled as the empty domain)."""
    return ("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type)


def check_supported(model: onnx.ModelProto, source: str) -> None:
    """One UnsupportedOpError naming every node the op registry has no kernel for, first of all."""
    missing = [_describe(n, i) for i, n in enumerate(model.graph.node) if registry.spec(_key(n)) is None]
    if missing:
        raise UnsupportedOpError(
            f"{source}: {len(missing)} node(s) use ops the runtime does not implement: {', '.join(missing)}"
        )


def _check_nodes(model: onnx.ModelProto, source: str, limit: int, tensors: Mapping[str, TensorProto]) -> None:
    g = model.graph
    ctx = _checker_context(model)
    opset = ctx.opset_imports.get("", ctx.opset_imports.get("ai.onnx", 0))
    producers: dict[str, str] = {n: "a graph input" for n in (v.name for v in g.input)}
    producers.update({t.name: "an initializer" for t in g.initializer})
    for index, node in enumerate(g.node):
        where = f"{source}: {_describe(node, index)}"
        _check_attributes(node, where, limit)
        if not _key(node)[0]:
            try:
                onnx.checker.check_node(node, ctx)
            except Exception as exc:  # ValidationError, SchemaError, or a decode error of a corrupt name
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InferenceError(f"{where}: {text}") from None
        _check_quant_params(node, where, opset, tensors)
        for out in node.output:
            if not out:
                continue
            if out in producers:
                raise InferenceError(f"{where}: writes tensor {out!r}, already written by {producers[out]}")
            producers[out] = _describe(node, index)
    produced = set(producers)
    for index, node in enumerate(g.node):
        if missing := [i for i in node.input if i and i not in produced]:
            raise InferenceError(f"{source}: {_describe(node, index)} reads {missing[0]!r}, which no node, input or "
                                 "initializer produces")
    for out in g.output:
        if out.name not in producers:
            raise InferenceError(f"{source}: graph output {out.name!r} is produced by no node, input or initializer")


def _least_bytes(t: onnx.TypeProto) -> int | None:
    """Bytes a tensor type takes at the least (unknown dims counted as 1); None if untyped."""
    tt = t.tensor_type
    if not tt.HasField("shape") or not tt.elem_type or tt.elem_type not in _NUMERIC:
        return None
    return math.prod(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim) * _itemsize(tt.elem_type)


def _check_type(name: str, t: onnx.TypeProto, where: str, limit: int) -> None:
    """A tensor type's dims are in range and its smallest size fits the memory limit."""
    dims = [d.dim_value for d in t.tensor_type.shape.dim if d.HasField("dim_value")]
    if len(t.tensor_type.shape.dim) > MAX_RANK or any(d < 0 or d > MAX_DIM for d in dims):
        raise InferenceError(f"{where}: tensor {name!r} has dims out of range {dims[:MAX_RANK]}")
    size = _least_bytes(t)
    if size is not None and size > limit:
        raise InferenceError(f"{where}: tensor {name!r} would take at least {size} bytes, over the memory limit of "
                             f"{limit} bytes")


@dataclass
class ShapePlan:
    """What shape inference needs, kept by the session for the run-time checks: the nodes in
    topological order, the types of graph inputs and initializers, the values of small
    constants (Reshape's shape, Slice's starts...), the opsets.  Large initializers are not kept."""

    nodes: list[onnx.NodeProto]
    types: dict[str, onnx.TypeProto]
    data: dict[str, TensorProto]
    opsets: list[onnx.OperatorSetIdProto]
    ir_version: int
    source: str

    def walk(self, limit: int, inputs: Mapping[str, onnx.TypeProto] | None = None,
             values: Mapping[str, TensorProto] | None = None) -> None:
        """ONNX shape inference one node at a time, in order, checking each output before the
        next node sees it: a negative or huge dim, or a tensor over the limit, is refused with
        the node's name, and no inference function is ever handed a negative dim (some abort
        the process on one)."""
        types = {**self.types, **(inputs or {})}
        data = {**self.data, **(values or {})}
        versions = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in self.opsets}
        for index, node in enumerate(self.nodes):
            domain = "" if node.domain in ("", "ai.onnx") else node.domain
            if any(i and i not in types for i in node.input):
                continue  # an input of unknown type (after an op ONNX has no schema for)
            try:
                schema = onnx.defs.get_schema(node.op_type, versions.get(domain, 1), domain)
            except onnx.defs.SchemaError:
                continue
            given = {i: types[i] for i in node.input if i}
            known = {i: data[i] for i in node.input if i in data}
            try:
                outputs = onnx.shape_inference.infer_node_outputs(
                    schema, node, given, known, opset_imports=self.opsets, ir_version=self.ir_version
                )
            except Exception as exc:  # onnx's InferenceError / ValidationError: the node is inconsistent
                text = " ".join(str(exc).split())
                raise InferenceError(f"{self.source}: {_describe(node, index)}: inconsistent shapes or types: "
                                     f"{text[:300]}") from None
            for name, t in outputs.items():
                _check_type(name, t, f"{self.source}: {_describe(node, index)}", limit)
                types[name] = t
            if node.op_type == "Constant" and len(node.output) == 1:
                value = next((a.t for a in node.attribute if a.name == "value" and a.type == a.TENSOR), None)
                if value is not None and math.prod(value.dims) <= SMALL_VALUES:
                    data[node.output[0]] = value


SMALL_VALUES = 64  # constants up to this many values are kept for shape inference (shapes, axes, scales)


def shape_plan(model: onnx.ModelProto, source: str) -> ShapePlan:
    """The ShapePlan of a checked model (cycles are refused here, naming the nodes)."""
    g = model.graph
    types: dict[str, onnx.TypeProto] = {}
    data: dict[str, TensorProto] = {}
    for t in g.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
        if math.prod(t.dims) <= SMALL_VALUES:
            data[t.name] = t
    for v in g.input:
        if v.name not in types:
            types[v.name] = v.type
    nodes = list(g.node)
    order, _, stuck = topological_order([(n.input, n.output) for n in nodes], set(types) | {""})
    if stuck:
        names = ", ".join(_describe(nodes[i], i) for i in stuck[:5])
        raise InferenceError(f"{source}: graph has a cycle through {names}")
    return ShapePlan([nodes[i] for i in order], types, data, list(model.opset_import),
                     model.ir_version or onnx.IR_VERSION, source)


def check_names(model: onnx.ModelProto, source: str) -> None:
    """protobuf hands back bytes for a string field that is not UTF-8; such a name is refused here."""
    g = model.graph
    fields = [o.domain for o in model.opset_import]
    fields += [v.name for v in (*g.input, *g.output, *g.value_info)] + [t.name for t in g.initializer]
    for n in g.node:
        fields += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    for t in g.initializer:
        fields += [e.key for e in t.external_data] + [e.value for e in t.external_data]
    if bad := [f for f in fields if not isinstance(f, str)]:
        raise InferenceError(f"{source}: names must be UTF-8 text, got {bad[0]!r}")


def check_model(model: onnx.ModelProto, source: str, limit: int) -> ShapePlan:
    """Every load-time check; returns the shape plan the session keeps for run-time checks."""
    g = model.graph
    if len(g.node) > MAX_NODES:
        raise InferenceError(f"{source}: {len(g.node)} nodes, more than the {MAX_NODES} the runtime accepts")
    if any(not o.domain and o.version > onnx.defs.onnx_opset_version() for o in model.opset_import):
        raise InferenceError(f"{source}: opset newer than this onnx package knows ({list(model.opset_import)})")
    check_names(model, source)
    check_supported(model, source)
    tensors: dict[str, TensorProto] = {}
    total = 0
    for t in g.initializer:
        total += check_tensor(t, f"{source}: initializer {t.name!r}", limit)
        tensors[t.name] = t
    if total > limit:
        raise InferenceError(f"{source}: initializers take {total} bytes, over the memory limit of {limit} bytes")
    for node in g.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    tensors.setdefault(node.output[0], attr.t)
    _check_nodes(model, source, limit, tensors)
    for v in g.input:
        if v.type.HasField("tensor_type"):
            _check_type(v.name, v.type, source, limit)
    plan = shape_plan(model, source)
    plan.walk(limit)
    return plan


def check_choices(graph: Graph) -> None:
    """Attribute values each op's unit says its kernel does not implement (e.g. a mode)."""
    for node in graph.nodes:
        op = registry.spec(node)
        try:
            problem = op.check_choices(node) if op is not None else None
        except Exception as exc:  # an attribute of the wrong kind (a tensor where a mode is expected)
            problem = f"attributes cannot be checked ({type(exc).__name__}: {exc})"
        if problem:
            raise InferenceError(f"{graph.source}: {node.describe()}: {problem}")


class RunShapeCheck:
    """Run-time half of the memory bound: for each new input signature, shape inference with
    the concrete input shapes (and the values of small integer inputs, which may be shapes:
    ConstantOfShape, Expand, Reshape), and a refusal before any kernel runs if a tensor would
    exceed the limit.  Signatures are cached (least recently used dropped first), so
    steady-state runs pay one lookup."""

    def __init__(self, plan: ShapePlan, limit: int, max_cache: int = 64) -> None:
        self.plan, self.limit, self.max_cache = plan, limit, max_cache
        self._seen: OrderedDict[tuple, None] = OrderedDict()

    @staticmethod
    def _is_shape_like(x: np.ndarray) -> bool:
        return x.dtype.kind in "iu" and x.ndim <= 1 and x.size <= SMALL_VALUES

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> None:
        # feeds arrive in the graph's input order, so the signature needs no names and no sort
        signature = tuple((v.shape, v.dtype.char, v.tobytes() if self._is_shape_like(v) else None)
                          for v in feeds.values())
        if signature in self._seen:
            self._seen.move_to_end(signature)
            return
        if sum(x.nbytes for x in feeds.values()) > self.limit:
            raise InferenceError(f"{self.plan.source}: inputs take more than the memory limit of {self.limit} bytes")
        types, values = {}, {}
        for name, x in feeds.items():
            declared = self.plan.types.get(name)
            elem = declared.tensor_type.elem_type if declared is not None else 0
            types[name] = helper.make_tensor_type_proto(elem or helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)
            if self._is_shape_like(x):
                values[name] = onnx.numpy_helper.from_array(x, name)
        self.plan.walk(self.limit, types, values)
        self._seen[signature] = None
        if len(self._seen) > self.max_cache:
            self._seen.popitem(last=False)
