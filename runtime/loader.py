"""ONNX protobuf -> runtime Graph.

Reads a file path or serialized bytes, loads external data only from inside the model's
folder (a path that escapes it is an error, never a read), and converts attributes and
initializers to plain Python and numpy values."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx
from onnx import helper, numpy_helper

from runtime.errors import InferenceError
from runtime.graph import Graph, Node, ValueInfo


def _check_external_data(model: onnx.ModelProto, folder: Path, source: str) -> None:
    """Every external-data location must resolve inside ``folder``."""
    root = folder.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(root):
            raise InferenceError(
                f"{source}: initializer {tensor.name!r} points at external data {location!r} "
                "outside the model folder"
            )


def _read_model(path_or_bytes: str | os.PathLike | bytes) -> tuple[onnx.ModelProto, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        model = onnx.load_model_from_string(bytes(path_or_bytes))
        if any(
            t.data_location == onnx.TensorProto.EXTERNAL
            for t in onnx.external_data_helper._get_all_tensors(model)
        ):
            raise InferenceError("<bytes>: model references external data; load it from its file instead")
        return model, "<bytes>"
    path = Path(path_or_bytes)
    if not path.is_file():
        raise InferenceError(f"{path}: no such model file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise InferenceError(f"{path}: not a readable ONNX model ({exc})") from exc
    _check_external_data(model, path.parent, str(path))
    onnx.external_data_helper.load_external_data_for_model(model, str(path.parent))
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


def _value_info(v: onnx.ValueInfoProto) -> ValueInfo:
    t = v.type.tensor_type
    dims: list[int | str | None] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
    ]
    elem = helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "undefined"
    names = {"float32": "float", "float64": "double"}
    return ValueInfo(v.name, dims, f"tensor({names.get(elem, elem)})")


def load_graph(path_or_bytes: str | os.PathLike | bytes) -> Graph:
    """Parses a model into a Graph (nodes topologically sorted)."""
    model, source = _read_model(path_or_bytes)
    g = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    init_names = set(constants)
    nodes = [
        Node(
            n.op_type,
            n.name or f"{n.op_type}_{i}",
            list(n.input),
            list(n.output),
            {a.name: _attribute(a) for a in n.attribute},
            n.domain,
        )
        for i, n in enumerate(g.node)
    ]
    graph = Graph(
        nodes=nodes,
        constants=constants,
        inputs=[_value_info(v) for v in g.input if v.name not in init_names],
        outputs=[_value_info(v) for v in g.output],
        source=source,
    )
    graph.toposort()
    return graph
