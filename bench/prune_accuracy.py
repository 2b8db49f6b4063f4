"""Pruning benchmark: how much structured pruning shrinks and speeds up real networks,
and what accuracy MNIST-5k keeps after pruning with and without fine-tuning.

    python bench/prune_accuracy.py [--models resnet18,mobilenet_v2,resnet50] [--runs 15]

Prints markdown tables. torchvision models use random weights (seed 0): shapes, params,
MACs and latency do not depend on the weights. Latency is torch CPU, batch 1, 224×224,
one thread, the median of ``--runs`` forwards, before/after runs interleaved so that load
from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

import compress
from compress.data import mnist5k_loaders
from compress.models import MnistCNN, accuracy, train_classifier
from compress.pruning import count_macs, count_params, recalibrate_batchnorm, sparsity_report


@torch.no_grad()
def interleaved_latency_ms(models: list[nn.Module], x: torch.Tensor, runs: int) -> list[float]:
    """Median forward time of each model, measuring them in turn so drift affects all."""
    times: list[list[float]] = [[] for _ in models]
    for m in models:
        m(x)  # warm-up
    for _ in range(runs):
        for i, m in enumerate(models):
            start = time.perf_counter()
            m(x)
            times[i].append(1000 * (time.perf_counter() - start))
    return [statistics.median(t) for t in times]


def torchvision_table(names: list[str], amounts: list[float], runs: int) -> str:
    x = torch.randn(1, 3, 224, 224)
    rows = [
        "| model | channels pruned | forward | params (M) | params − | MACs (G) | MACs − "
        "| latency before (ms) | latency after (ms) | speed-up |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        torch.manual_seed(0)
        base = getattr(torchvision.models, name)().eval()
        p0, c0 = count_params(base), count_macs(base, x)
        pruned = [
            compress.prune(base, amount=a, structured=True, scope="layer", example_inputs=x) for a in amounts
        ]
        lat = interleaved_latency_ms([base, *pruned], x, runs)
        for a, model, ms in zip(amounts, pruned, lat[1:], strict=True):
            with torch.no_grad():
                out = model(x)
            ok = "ok" if out.shape == (1, 1000) and bool(torch.isfinite(out).all()) else "FAILED"
            p, c = count_params(model), count_macs(model, x)
            rows.append(
                f"| {name} | {100 * a:.0f}% | {ok} | {p0 / 1e6:.2f} → {p / 1e6:.2f} "
                f"| {100 * (1 - p / p0):.0f}% | {c0 / 1e9:.2f} → {c / 1e9:.2f} | {100 * (1 - c / c0):.0f}% "
                f"| {lat[0]:.1f} | {ms:.1f} | {lat[0] / ms:.2f}× |"
            )
    return "\n".join(rows)


def mnist_table(finetune_epochs: int) -> str:
    train, test = mnist5k_loaders()
    torch.manual_seed(0)
    base = train_classifier(MnistCNN(), train, epochs=5)
    fp32 = accuracy(base, test)
    x = torch.randn(1, 1, 28, 28)
    p0, c0 = count_params(base), count_macs(base, x)

    def fine_tune(model: nn.Module, step: int) -> None:
        train_classifier(model, train, epochs=finetune_epochs)

    rows = [
        "| MNIST-5k CNN | fine-tuning | test acc (%) | Δ vs fp32 (pts) | params | MACs | zero weights |",
        "|---|---|---:|---:|---:|---:|---:|",
        f"| fp32 baseline (5 epochs) | — | {fp32:.1f} | — | {p0} | {c0} | 0% |",
    ]
    cases = [
        ("50% channels, structured (global l1)", {"amount": 0.5, "structured": True, "example_inputs": x}),
        ("90% weights, unstructured (global magnitude)", {"amount": 0.9, "permanent": True}),
    ]

    def recalibrate(model: nn.Module, step: int) -> None:
        recalibrate_batchnorm(model, train, num_batches=20)

    variants = [
        ("none", None),
        ("BN statistics re-estimated only", recalibrate),
        (f"{finetune_epochs} epochs", fine_tune),
    ]
    for label, kwargs in cases:
        for tuned, ft in variants:
            torch.manual_seed(0)
            model = compress.prune(base, fine_tune=ft, **kwargs)
            acc = accuracy(model, test)
            zeros = sparsity_report(model).total.sparsity
            rows.append(
                f"| {label} | {tuned} | {acc:.1f} | {acc - fp32:+.1f} "
                f"| {count_params(model)} | {count_macs(model, x)} | {100 * zeros:.0f}% |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,resnet50")
    parser.add_argument("--amounts", default="0.3,0.5")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--skip-torchvision", action="store_true")
    parser.add_argument("--skip-mnist", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.skip_torchvision:
        amounts = [float(a) for a in args.amounts.split(",")]
        print("### Structured pruning of torchvision models (per-group l1, random weights)\n")
        print(torchvision_table(args.models.split(","), amounts, args.runs), "\n")
    if not args.skip_mnist:
        print("### MNIST-5k: accuracy after pruning\n")
        print(mnist_table(args.finetune_epochs))


if __name__ == "__main__":
    main()
