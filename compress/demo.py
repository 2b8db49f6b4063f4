"""``python -m compress.demo``: train the MNIST-5k BN-CNN, quantize it three ways, print the table.

The smallest end-to-end proof that the install works: real data shipped in a wheel,
a real model trained here, and int8 accuracy per calibration method against fp32.
"""

from __future__ import annotations

import argparse
import time

import torch

import compress
from compress.data import mnist5k_loaders
from compress.models import MnistCNN, accuracy, train_classifier

METHODS = ("minmax", "percentile", "kl")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib-batches", type=int, default=16)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    train, test = mnist5k_loaders(seed=args.seed)
    model = MnistCNN()
    t0 = time.perf_counter()
    train_classifier(model, train, epochs=args.epochs, progress=not args.quiet)
    fp32 = accuracy(model, test)
    print(f"trained MnistCNN on MNIST-5k (4000 images) in {time.perf_counter() - t0:.0f} s\n")
    print("| model | top-1 (%) | Δ vs fp32 (points) |")
    print("|---|---:|---:|")
    print(f"| fp32 | {fp32:.1f} | |")
    for method in METHODS:
        q = compress.quantize(model, train, method=method, max_batches=args.calib_batches, progress=not args.quiet)
        acc = accuracy(q, test)
        print(f"| int8 {method} | {acc:.1f} | {acc - fp32:+.1f} |")


if __name__ == "__main__":
    main()
