"""Simulation vs ONNX Runtime on the same exported file, and fp32 vs int8 file sizes.

For each model and weight range (full 8-bit, and reduced 7-bit, which ONNX Runtime executes
exactly on CPUs without VNNI): quantize (minmax PTQ, per-channel int8 weights, uint8 activations),
export QDQ and QOperator files, run each in ONNX Runtime (CPU, default graph
optimizations, so QDQ groups run as integer kernels) on the 1000 MNIST-5k test
images and compare with the fake-quant torch model: top-1 agreement, max |Δ logit|
in output quantization steps, fraction of identical output codes, largest code
difference. The torchvision models get the MNIST images resized to 32×32 and repeated
over 3 channels; their weights are random (seed 0) with BatchNorm statistics from 20
train-mode batches of those images (no weight downloads). Prints markdown, headed by the CPU,
the runtime's ISA path and what the ORT exactness probe found on this machine.

    python bench/export_check.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import compress
import runtime
from compress.data import load_mnist5k, mnist5k_loaders
from compress.models import MnistCNN, train_classifier
from export import export_float
from export.validate import compare, ort_session, probe_onnxruntime


def to_rgb32(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)


@torch.no_grad()
def bn_statistics(
    model: torch.nn.Module, x: torch.Tensor, batches: int = 20, bs: int = 64
) -> torch.nn.Module:
    model.train()
    for i in range(batches):
        model(x[i * bs : (i + 1) * bs])
    return model.eval()


def models(split) -> dict[str, tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    cnn = train_classifier(MnistCNN(), mnist5k_loaders()[0], epochs=5)
    rgb_train, rgb_test = to_rgb32(split.x_train), to_rgb32(split.x_test)
    torch.manual_seed(0)
    r18 = bn_statistics(torchvision.models.resnet18(num_classes=10), rgb_train)
    torch.manual_seed(0)
    mv2 = bn_statistics(torchvision.models.mobilenet_v2(num_classes=10), rgb_train)
    return {
        "MNIST-5k CNN (trained)": (cnn, split.x_train, split.x_test),
        "resnet18 (random weights)": (r18, rgb_train, rgb_test),
        "mobilenet_v2 (random weights)": (mv2, rgb_train, rgb_test),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the .onnx files (default: a temp dir)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="export_check_"))
    out.mkdir(parents=True, exist_ok=True)
    split = load_mnist5k()
    agree_rows, size_rows = [], []
    for name, (model, train, test) in models(split).items():
        calib = [(train[i : i + 64], None) for i in range(0, 512, 64)]
        slug = name.split()[0].lower().replace("-", "")
        f32 = export_float(model, out / f"{slug}_fp32.onnx", test[:2]).stat().st_size
        sizes = {}
        for weight_range in ("full", "reduced"):
            q = compress.quantize(model, calib, weight_range=weight_range, progress=False)
            for fmt in ("qdq", "qoperator"):
                t0 = time.perf_counter()
                path = compress.export_onnx(q, out / f"{slug}_{weight_range}_{fmt}.onnx", test[:2], format=fmt)
                export_s = time.perf_counter() - t0
                sizes[fmt] = path.stat().st_size
                label = fmt.upper() if fmt == "qdq" else "QOperator"
                for engine, sess in (("ONNX Runtime", ort_session(path.read_bytes())),
                                     ("compress runtime", runtime.InferenceSession(str(path), threads=1))):
                    a = compare(q, sess, test)
                    agree_rows.append([name, weight_range, label, engine, str(a.n), *a.row(), f"{export_s:.1f}"])
        size_rows.append(
            [
                name,
                f"{f32 / 1e6:.2f}",
                f"{sizes['qdq'] / 1e6:.2f}",
                f"{sizes['qoperator'] / 1e6:.2f}",
                f"{f32 / sizes['qdq']:.2f}×",
            ]
        )
    probe = probe_onnxruntime()
    print(probe.note())  # names the machine: CPU model, int8 features, our runtime's path
    print()
    print(
        "| model | weights | format | engine | images | top-1 agreement | max abs Δ logit (steps) "
        "| identical output codes | max code Δ | export (s) |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in agree_rows:
        print("| " + " | ".join(r) + " |")
    print()
    print("| model | fp32 ONNX (MB) | int8 QDQ (MB) | int8 QOperator (MB) | fp32 / QDQ |")
    print("|---|---:|---:|---:|---:|")
    for r in size_rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
