"""QAT vs PTQ on MNIST-5k: where PTQ loses accuracy, a few epochs of QAT win it back.

For each seed, the fp32 MnistCNN is trained (5 epochs), quantized post-training
(minmax calibration on 8 batches) and, from the same calibration, fine-tuned with
``compress.prepare_qat`` for ``--epochs`` epochs. Accuracies are those of the int8
simulation (eval mode), which ``export_onnx`` writes and ONNX Runtime reproduces.

    python bench/qat_accuracy.py [--seeds 0 1 2] [--epochs 3] [--configs w4-tensor narrow-w4]

Prints markdown: one row per configuration and seed, then a summary over seeds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

import compress
from compress.data import mnist5k_loaders
from compress.models import MnistCNN, accuracy, train_classifier
from runtime.machine import describe

FP32_EPOCHS = 5
CALIB_BATCHES = 8


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    width: int
    weight_bits: int
    per_channel: bool
    weight_range: str = "full"


CONFIGS = [
    Config("w8", "standard 8-bit (w8 per-channel, a8)", 32, 8, True),
    Config("w8-reduced", "weight_range='reduced' (w7 per-channel, a8)", 32, 8, True, "reduced"),
    Config("w4-channel", "4-bit weights per-channel, a8", 32, 4, True),
    Config("w4-tensor", "4-bit weights per-tensor, a8", 32, 4, False),
    Config("narrow-w4", "narrow MnistCNN(8), 4-bit weights per-channel, a8", 8, 4, True),
]


class OnDevice:
    """A loader whose batches move to ``device`` (CUDA when present), keeping ``len``."""

    def __init__(self, loader, device: str) -> None:
        self.loader, self.device = loader, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return ((x.to(self.device), y.to(self.device)) for x, y in self.loader)


def epochs_to_steps(epochs: float | None, steps_per_epoch: int) -> int | None:
    return None if epochs is None else int(epochs * steps_per_epoch)


def fp32_model(width: int, seed: int, train: OnDevice) -> nn.Module:
    torch.manual_seed(seed)
    train.loader.generator.manual_seed(seed)
    return train_classifier(MnistCNN(width).to(train.device), train, epochs=FP32_EPOCHS)


def run(cfg: Config, model: nn.Module, seed: int, train: OnDevice, test: OnDevice, args) -> dict[str, float]:
    calib = [b for _, b in zip(range(CALIB_BATCHES), train, strict=False)]
    bits, per_channel = cfg.weight_bits, cfg.per_channel
    ptq = compress.quantize(model, calib, weight_bits=bits, weight_range=cfg.weight_range, per_channel=per_channel,
                            progress=False)
    torch.manual_seed(seed)
    train.loader.generator.manual_seed(seed)
    steps = len(train)
    qat = compress.prepare_qat(
        model, calib[0][0], calib_loader=calib, weight_bits=bits, weight_range=cfg.weight_range,
        per_channel=per_channel,
        freeze_bn_after=epochs_to_steps(args.freeze_bn_epochs, steps),
        freeze_observers_after=epochs_to_steps(args.freeze_obs_epochs, steps),
        learnable_scales=args.lsq, progress=False,
    )
    start = time.perf_counter()
    train_classifier(qat, train, epochs=args.epochs, lr=args.lr)
    return {"fp32": accuracy(model, test), "ptq": accuracy(ptq, test), "qat": accuracy(qat.eval(), test),
            "qat_s": time.perf_counter() - start}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3, help="QAT epochs (≤ 3 per the issue)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak one-cycle learning rate for QAT")
    ap.add_argument("--freeze-bn-epochs", type=float, default=None, help="default: never")
    ap.add_argument("--freeze-obs-epochs", type=float, default=None, help="default: never")
    ap.add_argument("--lsq", action="store_true", help="learnable activation scales")
    keys = [c.key for c in CONFIGS]
    ap.add_argument("--configs", nargs="+", default=keys, choices=keys)
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    configs = [c for c in CONFIGS if c.key in args.configs]
    print(f"machine: {describe()}")
    print(f"QAT: {args.epochs} epochs, one-cycle lr {args.lr}, BN frozen after {args.freeze_bn_epochs} "
          f"epochs, observers after {args.freeze_obs_epochs}, LSQ {'on' if args.lsq else 'off'}, {device}\n")
    print("| configuration | seed | fp32 (%) | PTQ (%) | QAT (%) | PTQ − fp32 | QAT − fp32 | QAT s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results: dict[str, list[dict[str, float]]] = {c.key: [] for c in configs}
    for seed in args.seeds:
        train, test = (OnDevice(loader, device) for loader in mnist5k_loaders())
        models = {w: fp32_model(w, seed, train) for w in sorted({c.width for c in configs})}
        for cfg in configs:
            r = run(cfg, models[cfg.width], seed, train, test, args)
            results[cfg.key].append(r)
            print(f"| {cfg.label} | {seed} | {r['fp32']:.1f} | {r['ptq']:.1f} | {r['qat']:.1f} | "
                  f"{r['ptq'] - r['fp32']:+.1f} | {r['qat'] - r['fp32']:+.1f} | {r['qat_s']:.0f} |",
                  flush=True)
    print("\n| configuration | seeds | fp32 | PTQ | QAT | PTQ − fp32 | QAT − fp32 | worst QAT − fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cfg in configs:
        rs = results[cfg.key]
        mean = {k: statistics.fmean(r[k] for r in rs) for k in ("fp32", "ptq", "qat")}
        worst = min(r["qat"] - r["fp32"] for r in rs)
        print(f"| {cfg.label} | {len(rs)} | {mean['fp32']:.2f} | {mean['ptq']:.2f} | {mean['qat']:.2f} | "
              f"{mean['ptq'] - mean['fp32']:+.2f} | {mean['qat'] - mean['fp32']:+.2f} | {worst:+.1f} |")


if __name__ == "__main__":
    main()
