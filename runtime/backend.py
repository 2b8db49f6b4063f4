"""``onnx.backend.base.Backend`` over :class:`runtime.InferenceSession`, so that ONNX's own
backend test suite (``onnx.backend.test.BackendTest``) runs against the runtime the way ONNX
Runtime tests its conformance.

CPU only, one thread (the conformance cases are tiny); the model is serialized and loaded by
the same path a user's file takes, validation and graph passes included."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from runtime.session import InferenceSession


class RuntimeRep(BackendRep):
    """A prepared model: runs positional inputs (graph inputs in order, initializers excluded)."""

    def __init__(self, session: InferenceSession) -> None:
        self.session = session

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            names = [i.name for i in self.session.get_inputs()]
            feed = dict(zip(names, inputs, strict=False))
        return tuple(self.session.run(None, feed))


class RuntimeBackend(Backend):
    """The bundled runtime as an ONNX backend (device ``CPU``)."""

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> RuntimeRep:
        super().prepare(model, device, **kwargs)
        return RuntimeRep(InferenceSession(model.SerializeToString(), threads=1))

    @classmethod
    def run_model(
        cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Sequence[np.ndarray],
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, ...]:
        """One node on its inputs: wrapped in a one-node model (latest opset) and run."""
        graph_inputs = [
            onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype), np.asarray(x).shape
            )
            for name, x in zip(node.input, inputs, strict=False)
            if name
        ]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
        model = onnx.helper.make_model(onnx.helper.make_graph([node], "node", graph_inputs, graph_outputs))
        return cls.run_model(model, [x for name, x in zip(node.input, inputs, strict=False) if name], device)


prepare = RuntimeBackend.prepare
run_model = RuntimeBackend.run_model
run_node = RuntimeBackend.run_node
supports_device = RuntimeBackend.supports_device
