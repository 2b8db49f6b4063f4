"""Other tools' ONNX files through our runtime: torchvision classification models exported to
fp32 by torch.onnx, then quantized by ONNX Runtime's ``quantize_static`` (QDQ and QOperator,
uint8 and int8 activations, int8 per-channel weights).

For each file: our runtime must load and run it.  fp32: max |ours - ORT| relative to max |ORT|
(must stay under 1e-4).  int8: the output (a DequantizeLinear of codes) is compared in output
quantization steps with ``onnx.reference.ReferenceEvaluator`` (the specification's arithmetic:
dequantize, compute in float, quantize; QDQ files only, since the reference has no kernels for
the com.microsoft ops QOperator files use) and with ONNX Runtime, which is exact where the
probe of ``export.validate`` says so.

Where the roundings differ: our runtime (like ORT) folds DQ -> Conv -> Q into one integer op and
requantizes the exact int32 sum with one fp32 multiplier, fp32(fp32(s_x*s_w)/s_y); the reference
convolves dequantized float32 values (float accumulation, rounded at every add) and divides by
s_y.  Values whose scaled sum lies within float rounding of a .5 boundary round differently:
one step, rarely, then propagated through the layers that follow.

Weights are random (seed 0, no download), inputs standard normal; BatchNorm keeps its default
statistics.  Prints a markdown table.

    python bench/onnx_files.py [--models resnet18,mobilenet_v2] [--size 64] [--max-params 90e6]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import onnx.version_converter

import runtime

FORMATS = [("qdq", "u8"), ("qdq", "s8"), ("qoperator", "u8"), ("qoperator", "s8")]
MIN_SIZE = {"inception_v3": 75, "googlenet": 32}


def classification_models(max_params: float) -> list[str]:
    """torchvision's classification model names whose parameter count is at most max_params."""
    import torch
    import torchvision

    names = []
    for name in torchvision.models.list_models(module=torchvision.models):
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None)
        if sum(p.numel() for p in model.parameters()) <= max_params:
            names.append(name)
    return names


def export_fp32(name: str, path: Path, size: int) -> Path:
    """torch.onnx (TorchScript exporter, opset 17) of the model with random weights, then ORT's
    pre-processing (shape inference, BN folding) that quantize_static expects."""
    import torch
    import torchvision
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    torch.onnx.export(
        model,
        torch.randn(1, 3, size, size),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    quant_pre_process(str(path), str(path), skip_symbolic_shape=True)
    return path


def quantize(fp32: Path, out: Path, size: int, fmt: str, act: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.items = iter([{"input": rng.standard_normal((1, 3, size, size), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def reference_run(path: Path, x: np.ndarray) -> np.ndarray:
    """onnx.reference on the file converted to opset 21 (the reference implements Q/DQ from
    opset 19 on; the 8-bit arithmetic is the same in every version)."""
    model = onnx.version_converter.convert_version(onnx.load(str(path)), 21)
    return onnx.reference.ReferenceEvaluator(model).run(None, {"input": x})[0]


def output_step(path: Path) -> float | None:
    """Scale of the DequantizeLinear (or QOperator DequantizeLinear) that produces the graph output."""
    model = onnx.load(str(path))
    out = model.graph.output[0].name
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if out in node.output and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            return float(inits[node.input[1]].reshape(-1)[0])
    return None


@dataclass
class Agreement:
    identical: float  # fraction of output codes equal
    max_steps: int

    def cell(self) -> str:
        return f"{100 * self.identical:.2f} % / {self.max_steps}"


def agreement(ours: np.ndarray, other: np.ndarray, step: float) -> Agreement:
    steps = np.rint(np.abs(ours.astype(np.float64) - other.astype(np.float64)) / step).astype(np.int64)
    return Agreement(float((steps == 0).mean()), int(steps.max()))


@dataclass
class Row:
    model: str
    params_m: float
    fp32_rel: float
    int8: dict[str, tuple[Agreement | None, Agreement | None]]
    seconds: float


def measure(name: str, size: int, folder: Path) -> Row:
    import torchvision

    start = time.perf_counter()
    size = max(size, MIN_SIZE.get(name, 0))
    with __import__("torch").device("meta"):
        params = sum(p.numel() for p in torchvision.models.get_model(name, weights=None).parameters())
    x = np.random.default_rng(2).standard_normal((1, 3, size, size), dtype=np.float32)
    fp32 = export_fp32(name, folder / f"{name}.onnx", size)
    ours = runtime.InferenceSession(str(fp32), threads=1).run(None, {"input": x})[0]
    ref = ort_run(fp32, x)
    fp32_rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    int8 = {}
    for fmt, act in FORMATS:
        qpath = quantize(fp32, folder / f"{name}_{fmt}_{act}.onnx", size, fmt, act)
        ours_q = runtime.InferenceSession(str(qpath), threads=1).run(None, {"input": x})[0]
        step = output_step(qpath)
        if step is None:
            raise RuntimeError(f"{qpath.name}: the output is not a DequantizeLinear of codes")
        vs_ort = agreement(ours_q, ort_run(qpath, x), step)
        vs_ref = None
        if fmt == "qdq":
            vs_ref = agreement(ours_q, reference_run(qpath, x), step)
        int8[f"{fmt} {act}"] = (vs_ref, vs_ort)
    return Row(name, params / 1e6, fp32_rel, int8, time.perf_counter() - start)


def table(rows: list[Row], ort_note: str, size: int) -> str:
    keys = [f"{f} {a}" for f, a in FORMATS]
    head = ["model", "params (M)", "fp32 rel. err vs ORT"]
    head += [f"{k} vs reference" for k in keys if k.startswith("qdq")] + [f"{k} vs ORT" for k in keys]
    lines = [
        f"CPU: {platform.processor() or platform.machine()}; runtime ISA path: {runtime.available_paths()[-1]}; "
        f"input 1×3×{size}×{size} (larger where the model needs it). {ort_note}",
        "",
        "int8 cells: identical output codes / largest difference in output steps.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [r.model, f"{r.params_m:.1f}", f"{r.fp32_rel:.1e}"]
        cells += [r.int8[k][0].cell() for k in keys if k.startswith("qdq")]
        cells += [r.int8[k][1].cell() for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated torchvision names (default: all within --max-params)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-params", type=float, default=90e6)
    args = parser.parse_args()
    from export.validate import probe_onnxruntime

    names = args.models.split(",") if args.models else classification_models(args.max_params)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows.append(measure(name, args.size, Path(tmp)))
            print(f"{name}: {rows[-1].seconds:.0f} s", flush=True)
    print(table(rows, probe_onnxruntime().note(), args.size))


if __name__ == "__main__":
    main()
