"""Model builders for the runtime tests: torch -> fp32 ONNX -> ORT quantize_static, and small
hand-made ONNX models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


def export_fp32(model, path: Path, shape: tuple[int, ...]) -> Path:
    """torch.onnx.export (opset 17) followed by ORT's pre-processing (folds Identity/BN)."""
    import torch
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.onnx.export(
        model.eval(),
        torch.randn(*shape),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    quant_pre_process(str(path), str(path), skip_symbolic_shape=True)
    return path


def quantize_ort(
    fp32: Path, out: Path, shape: tuple[int, ...], fmt: str, per_channel: bool, batches: int = 3,
    reduce_range: bool = False,
) -> Path:
    """ORT quantize_static, uint8 activations and int8 weights (7-bit with ``reduce_range``), on a
    few random batches."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter(
                [{"input": rng.standard_normal(shape, dtype=np.float32)} for _ in range(batches)]
            )

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=reduce_range,
    )
    return out


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> bytes:
    """A small ONNX model as bytes (IR 8 so every onnxruntime build accepts it)."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, ir_version=8, opset_imports=opsets).SerializeToString()


def tensor(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name: str, value) -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.asarray(value), name)


def ort_session(model: bytes | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
