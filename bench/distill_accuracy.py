"""Does distillation help a small student on MNIST-5k? (issue 7)

Trains one teacher (MnistCNN(32)) on the 4000 training images, then, for each seed,
the same small student (MnistCNN(8), ~1/15 of the teacher's parameters) under the
same budget (epochs, optimizer, schedule, init, data order) on labels alone and with
each distillation loss, through ``compress.distill``.

Regime (``--n-labeled``, default 500): the student's training set is a fixed,
class-balanced subset of the training images, the same for every arm; the KD arms
see exactly those images and labels and, in addition, the teacher's logits on them.
That is the setting KD is for: a teacher exists, the student's own data is small.
``--n-labeled 4000`` gives the full-data comparison (where KD is within noise).

Then "QAT+KD ≥ QAT alone": each seed's labels-only fp32 student is prepared with
``compress.prepare_qat`` and fine-tuned on labels alone or with KD from the fp32
teacher; the fake-quant models are compared. That part runs only when
``compress.prepare_qat`` exists, and the output says when it was skipped.

Prints markdown tables (mean ± std over seeds) for BENCHMARKS.md:

    python bench/distill_accuracy.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import compress
from compress.data import Split, load_mnist5k
from compress.models import MnistCNN, accuracy, train_classifier
from distill import DKDLoss, KDLoss

BASELINE = "labels only (CE)"
QAT_BASELINE = "QAT, labels only"


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def labeled_subset(split: Split, n: int) -> Split:
    """The first ``n // 10`` training images of each class (the split is already shuffled); test set kept."""
    if n >= len(split.y_train):
        return split
    idx = torch.cat([torch.nonzero(split.y_train == c).flatten()[: n // 10] for c in range(10)]).sort().values
    return Split(split.x_train[idx], split.y_train[idx], split.x_test, split.y_test)


def train_loader(split: Split, seed: int, batch_size: int = 64) -> DataLoader:
    """Same split for every run; the seed fixes only the shuffling order (the init is seeded apart)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(split.x_train, split.y_train), batch_size, shuffle=True, generator=g)


def fit(
    student: nn.Module, teacher: nn.Module, loader: DataLoader, epochs: int, lr: float, method: dict | None
) -> nn.Module:
    """Train ``student`` on labels (``method is None``) or with ``compress.distill(**method)``.

    Both go through the same Adam + one-cycle loop, so only the loss differs.
    """
    if method is None:
        return train_classifier(student, loader, epochs, lr)
    return compress.distill(student, teacher, loader, epochs=epochs, lr=lr, **method)


def methods() -> dict[str, dict | None]:
    """Label-only baseline and the distillation variants, each at fixed (paper) hyper-parameters.

    Built fresh per run: loss modules may hold learned state.
    """
    return {
        BASELINE: None,
        "KD (T=4, α=0.5)": {"loss": KDLoss(temperature=4.0, alpha=0.5)},
        "KD (T=4, α=0.9)": {"loss": KDLoss(temperature=4.0, alpha=0.9)},
        "DKD (T=4, α=1, β=8)": {"loss": DKDLoss()},
    }


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def table(first_column: str, results: dict[str, list[float]], baseline: str) -> str:
    """Markdown: accuracy mean ± std per row, and the per-seed paired gain over ``baseline``."""
    lines = [
        f"| {first_column} | test accuracy % (mean ± std) | paired gain over {baseline} (pp) "
        "| seeds ≥ baseline |",
        "|---|---|---|---|",
    ]
    for name, accs in results.items():
        if name == baseline:
            lines.append(f"| {name} | {mean_std(accs)} | — | — |")
            continue
        gains = [a - b for a, b in zip(accs, results[baseline], strict=True)]
        lines.append(
            f"| {name} | {mean_std(accs)} | {mean_std(gains)} | {sum(g >= 0 for g in gains)}/{len(gains)} |"
        )
    return "\n".join(lines)


def load_prepare_qat() -> Callable | None:
    """``compress.prepare_qat`` if the QAT facade exists in this checkout, else None."""
    try:
        from compress import prepare_qat
    except ModuleNotFoundError as exc:
        if exc.name != "compress.qat":
            raise
        return None
    return prepare_qat


def qat_results(
    prepare_qat: Callable,
    fp32_students: dict[int, nn.Module],
    teacher: nn.Module,
    split: Split,
    test: DataLoader,
    epochs: int,
    lr: float,
) -> dict[str, list[float]]:
    """Fine-tune a QAT copy of each seed's fp32 student on labels and with KD; fake-quant accuracy."""
    example = (split.x_train[:8],)
    results: dict[str, list[float]] = {
        "fp32 student before QAT": [],
        QAT_BASELINE: [],
        "QAT + KD (T=4, α=0.5)": [],
    }
    for seed, fp32 in fp32_students.items():
        results["fp32 student before QAT"].append(accuracy(fp32, test))
        for name, method in ((QAT_BASELINE, None), ("QAT + KD (T=4, α=0.5)", {"loss": KDLoss(4.0, 0.5)})):
            torch.manual_seed(seed)
            student = prepare_qat(copy.deepcopy(fp32).train(), example, progress=False)
            results[name].append(
                accuracy(fit(student.train(), teacher, train_loader(split, seed), epochs, lr, method), test)
            )
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--teacher-width", type=int, default=32)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--width", type=int, default=8, help="student width")
    ap.add_argument("--teacher-lr", type=float, default=3e-3)
    ap.add_argument("--n-labeled", type=int, default=500, help="student training images (class-balanced)")
    ap.add_argument("--epochs", type=int, default=20, help="student budget, the same for every method")
    ap.add_argument("--qat-epochs", type=int, default=5, help="QAT fine-tuning budget")
    ap.add_argument("--lr", type=float, default=1e-2, help="student learning rate")
    ap.add_argument("--qat-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    full = load_mnist5k()
    split = labeled_subset(full, args.n_labeled)
    test = DataLoader(TensorDataset(split.x_test, split.y_test), batch_size=256)
    torch.manual_seed(0)
    teacher = train_classifier(
        MnistCNN(args.teacher_width), train_loader(full, 0), args.teacher_epochs, args.teacher_lr
    )
    t_params, s_params = n_params(teacher), n_params(MnistCNN(args.width))
    if 5 * s_params > t_params:
        raise SystemExit(f"student has {s_params} parameters, more than 1/5 of the teacher's {t_params}")
    print(
        f"teacher MnistCNN({args.teacher_width}): {t_params} params, {args.teacher_epochs} epochs, "
        f"{accuracy(teacher, test):.2f}% | student MnistCNN({args.width}): {s_params} params "
        f"({t_params / s_params:.1f}x fewer), {len(split.y_train)} labeled images, {args.epochs} epochs, "
        f"lr {args.lr}, seeds {args.seeds}\n"
    )

    results: dict[str, list[float]] = {}
    fp32_students: dict[int, nn.Module] = {}
    for seed in args.seeds:
        for name, method in methods().items():
            torch.manual_seed(seed)  # same init and data order for every method
            student = fit(
                MnistCNN(args.width), teacher, train_loader(split, seed), args.epochs, args.lr, method
            )
            results.setdefault(name, []).append(accuracy(student, test))
            if method is None:
                fp32_students[seed] = student
    print(table("student training", results, BASELINE))
    print("\nper seed " + str(args.seeds) + ": " + "; ".join(f"{k} {v}" for k, v in results.items()))

    prepare_qat = load_prepare_qat()
    if prepare_qat is None:
        print("\nQAT rows skipped: compress.prepare_qat is not in this checkout yet.")
    else:
        qat = qat_results(prepare_qat, fp32_students, teacher, split, test, args.qat_epochs, args.qat_lr)
        print(
            f"\nQAT fine-tuning of each labels-only fp32 student: {args.qat_epochs} epoch(s), "
            f"lr {args.qat_lr}\n"
        )
        print(table("QAT fine-tuning", qat, QAT_BASELINE))
        print("\nper seed " + str(args.seeds) + ": " + "; ".join(f"{k} {v}" for k, v in qat.items()))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
