"""ONNX protobuf -> runtime Graph.

Reads a file path or serialized bytes, checks the model at the door (runtime/validate.py),
loads external data only from inside the model's folder and converts attributes and
initializers to plain Python and numpy values.  Every failure, of protobuf, of the onnx
helpers or of the file system, is an InferenceError naming the file, tensor or node.

External data is read by this module, not by onnx's helper, because the helper follows a
symlinked model file out of its folder, opens FIFOs (and blocks forever) and trusts
offsets and lengths.  Here the model's folder is the folder of the model file after
resolving symlinks; each location must resolve (symlinks followed) to a regular file inside
it, and offset and length must lie within that file and match the tensor's dims."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.errors import InferenceError
from runtime.graph import Graph, Node, ValueInfo
from runtime.validate import (
    PACKED_4BIT,
    ShapePlan,
    check_choices,
    check_model,
    check_names,
    check_tensor,
    memory_limit,
    parse_model,
)

_EXTERNAL_KEYS = ("location", "offset", "length", "checksum", "basepath")


@dataclass
class LoadedModel:
    """What the session keeps from a load: the graph, and the shape plan for run-time checks."""

    graph: Graph
    shapes: ShapePlan
    memory_limit: int


def _all_tensors(model: onnx.ModelProto) -> list[tuple[TensorProto, str]]:
    """Initializers and tensor attributes of the main graph, each with a name for messages."""
    found = [(t, f"initializer {t.name!r}") for t in model.graph.initializer]
    for i, node in enumerate(model.graph.node):
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                found.append((attr.t, f"node {node.name or f'{node.op_type}_{i}'!r} ({node.op_type}) "
                                      f"attribute {attr.name!r}"))
    return found


def _external_int(entries: dict[str, str], key: str, where: str) -> int | None:
    if key not in entries:
        return None
    text = entries[key]
    if not text.isdigit():
        raise InferenceError(f"{where}: external data {key} {text!r} is not a non-negative integer")
    return int(text)


def _read_external(t: TensorProto, root: Path, where: str, limit: int) -> None:
    """Replaces the external reference of ``t`` by its bytes, read from inside ``root``."""
    entries: dict[str, str] = {}
    for e in t.external_data:
        if e.key not in _EXTERNAL_KEYS:
            raise InferenceError(f"{where}: unknown external data key {e.key!r}")
        entries[e.key] = e.value
    location = entries.get("location", "")
    if not location or "\0" in location or os.path.isabs(location):
        raise InferenceError(f"{where}: external data location {location!r} must be a relative file name")
    offset = _external_int(entries, "offset", where) or 0
    length = _external_int(entries, "length", where)
    need = check_tensor(t, where, limit)  # dims and type first: the size we may read is bounded here
    if length is not None and length != need:
        raise InferenceError(
            f"{where}: external data length {length} does not match dims {list(t.dims)} ({need} bytes)"
        )
    try:
        target = (root / location).resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise InferenceError(f"{where}: external data file {location!r} cannot be opened ({exc})") from None
    if not target.is_relative_to(root):
        raise InferenceError(f"{where}: external data {location!r} resolves outside the model folder {root}")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise InferenceError(f"{where}: external data file {location!r} cannot be opened ({exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InferenceError(f"{where}: external data {location!r} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if offset + need > info.st_size:
            raise InferenceError(
                f"{where}: external data {location!r} holds {info.st_size} bytes; offset {offset} + "
                f"{need} bytes lies beyond its end"
            )
        f.seek(offset)
        data = f.read(need)
    if len(data) != need:
        raise InferenceError(f"{where}: external data {location!r} ended early")
    del t.external_data[:]
    t.data_location = TensorProto.DEFAULT
    t.raw_data = data


def _resolve_external_data(model: onnx.ModelProto, model_file: Path, source: str, limit: int) -> None:
    root = model_file.parent
    for t, what in _all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            _read_external(t, root, f"{source}: {what}", limit)


def _read_model(path_or_bytes: str | os.PathLike | bytes, limit: int) -> tuple[onnx.ModelProto, str]:
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data, source = bytes(path_or_bytes), "<bytes>"
        model = parse_model(data, source)
        check_names(model, source)
        if any(t.data_location == TensorProto.EXTERNAL for t, _ in _all_tensors(model)):
            raise InferenceError("<bytes>: model references external data; load it from its file instead")
        return model, source
    if not isinstance(path_or_bytes, str | os.PathLike):
        raise InferenceError(f"expected a model file path or serialized bytes, got {type(path_or_bytes).__name__}")
    path = Path(path_or_bytes)
    try:
        real = path.resolve(strict=True)
        info = real.stat()
    except (OSError, RuntimeError) as exc:
        raise InferenceError(f"{path}: no such model file ({exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InferenceError(f"{path}: not a regular file")
    if info.st_size > limit:
        raise InferenceError(f"{path}: {info.st_size} bytes, over the memory limit of {limit} bytes")
    try:
        data = real.read_bytes()
    except OSError as exc:
        raise InferenceError(f"{path}: cannot be read ({exc})") from None
    model = parse_model(data, str(path))
    check_names(model, str(path))
    _resolve_external_data(model, real, str(path), limit)
    return model, str(path)


def _attribute(attr: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def _value_info(v: onnx.ValueInfoProto, source: str) -> ValueInfo:
    if not v.type.HasField("tensor_type"):
        raise InferenceError(f"{source}: graph input or output {v.name!r} is not a tensor")
    t = v.type.tensor_type
    dims: list[int | str | None] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
    ]
    try:
        elem = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "undefined"
    except KeyError:
        raise InferenceError(f"{source}: input or output {v.name!r} has unknown element type {t.elem_type}") from None
    names = {"float32": "float", "float64": "double"}
    return ValueInfo(v.name, dims, f"tensor({names.get(elem, elem)})")


def _node(n: onnx.NodeProto, index: int, source: str) -> Node:
    name = n.name or f"{n.op_type}_{index}"
    attrs = {}
    for a in n.attribute:
        try:
            attrs[a.name] = _attribute(a)
        except InferenceError:
            raise
        except Exception as exc:  # onnx helpers raise ValueError/TypeError/KeyError on odd protos
            where = f"{source}: node {name!r} ({n.op_type})"
            raise InferenceError(f"{where}: attribute {a.name!r} unreadable ({exc})") from None
    return Node(n.op_type, name, list(n.input), list(n.output), attrs, n.domain)


def load_model(path_or_bytes: str | os.PathLike | bytes, limit: int | None = None) -> LoadedModel:
    """Reads, validates and converts a model; the Graph's nodes are topologically sorted."""
    limit = memory_limit(limit)
    model, source = _read_model(path_or_bytes, limit)
    shapes = check_model(model, source, limit)
    g = model.graph
    constants = {}
    for t in g.initializer:
        try:
            constants[t.name] = numpy_helper.to_array(t)
            if t.data_type in PACKED_4BIT:  # ml_dtypes int4/uint4 -> one int8/uint8 per element
                constants[t.name] = constants[t.name].astype(PACKED_4BIT[t.data_type])
        except Exception as exc:  # validated above; anything left is still the file's fault
            raise InferenceError(f"{source}: initializer {t.name!r} unreadable ({exc})") from None
    graph = Graph(
        nodes=[_node(n, i, source) for i, n in enumerate(g.node)],
        constants=constants,
        inputs=[_value_info(v, source) for v in g.input if v.name not in constants],
        outputs=[_value_info(v, source) for v in g.output],
        source=source,
        opsets={("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import},
    )
    graph.toposort()
    check_choices(graph)
    return LoadedModel(graph, shapes, limit)


def load_graph(path_or_bytes: str | os.PathLike | bytes, limit: int | None = None) -> Graph:
    """Parses a model into a Graph (nodes topologically sorted)."""
    return load_model(path_or_bytes, limit).graph
