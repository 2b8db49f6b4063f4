"""Latency of the bundled int8 runtime against its peers, in one process.

resnet18 and mobilenet_v2 (torchvision, random weights with a fixed seed: latency does not
depend on the values) at 224x224 are exported to ONNX and quantized by ONNX Runtime's
quantize_static (QDQ, uint8 activations, int8 per-channel weights).  For batch 1 and 16 and
1 and 2 threads, the fastest of N runs of: torch fp32 eager, ORT fp32, ORT int8 and this
runtime on the same int8 file.  Prints a markdown table; ratios are peer time / ours.

    python bench/runtime_latency.py [--models resnet18 mobilenet_v2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Peers must not keep spinning threads between runs: on a small shared machine that steals
# the cores from whoever is measured next.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def export_and_quantize(name: str, folder: Path) -> tuple[object, Path, Path]:
    """(torch model, fp32 ONNX path, ORT-quantized QDQ path)."""
    import torch
    import torchvision
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval()
    fp32 = folder / f"{name}_fp32.onnx"
    torch.onnx.export(
        model,
        torch.randn(1, 3, 224, 224),
        str(fp32),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    quant_pre_process(str(fp32), str(fp32), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter(
                [{"input": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)} for _ in range(4)]
            )

        def get_next(self):
            return next(self.items, None)

    int8 = folder / f"{name}_int8.onnx"
    quantize_static(
        str(fp32),
        str(int8),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return model, fp32, int8


def best_ms(repeats: int, fn: Callable[..., object], *args: object, warmup: int = 3) -> float:
    """Fastest wall time of fn(*args) in milliseconds: on a shared machine the minimum is the
    run least disturbed by other work, and every peer is measured the same way."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def measure(name: str, folder: Path, batches: list[int], threads: list[int], repeats: int) -> list[dict]:
    import onnxruntime as ort
    import torch

    import runtime

    model, fp32, int8 = export_and_quantize(name, folder)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        options = ort.SessionOptions()
        options.intra_op_num_threads = t
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        ort_fp32 = ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
        ort_int8 = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
        ours = runtime.InferenceSession(int8, threads=t)
        for b in batches:
            x = np.random.default_rng(b).standard_normal((b, 3, 224, 224), dtype=np.float32)
            xt = torch.from_numpy(x)
            n = repeats if b == 1 else max(3, repeats // 4)
            with torch.inference_mode():
                torch_ms = best_ms(n, model, xt)
            row = {
                "model": name,
                "batch": b,
                "threads": t,
                "torch fp32": torch_ms,
                "ORT fp32": best_ms(n, ort_fp32.run, None, {"input": x}),
                "ORT int8": best_ms(n, ort_int8.run, None, {"input": x}),
                "ours int8": best_ms(n, ours.run, None, {"input": x}),
            }
            rows.append(row)
            print(
                f"  {name} b{b} t{t}: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items() if isinstance(v, float)),
                flush=True,
            )
    return rows


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | batch | threads | ours int8 (ms) | ORT int8 (ms) | ORT fp32 (ms) | torch fp32 (ms) "
        "| ORT int8 / ours | ORT fp32 / ours | torch fp32 / ours |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        ours = r["ours int8"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['threads']} | {ours:.2f} | {r['ORT int8']:.2f} | "
            f"{r['ORT fp32']:.2f} | {r['torch fp32']:.2f} | {r['ORT int8'] / ours:.2f} | "
            f"{r['ORT fp32'] / ours:.2f} | {r['torch fp32'] / ours:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import runtime

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows += measure(name, Path(tmp), args.batches, args.threads, args.repeats)
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, ISA path: {runtime.available_paths()[-1]}"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
