"""``compress.evaluate``: accuracy, latency and size of every form a model takes in the flow.

One pass over the data feeds every variant the same batch, so the accuracy numbers and
the agreement with fp32 (how often a variant picks fp32's class, the measure that still
means something for random-weight latency models) come from identical inputs. Latency
is the fastest of ``repeats`` runs per variant, the least disturbed run on a shared
machine, with the same thread count for every engine so the ratios are fair.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from runtime import InferenceSession
from runtime.machine import describe

FP32_TORCH = "fp32 (torch)"
FP32_ORT = "fp32 (ONNX Runtime)"


def sim_label(scheme: str = "int8") -> str:
    return f"{scheme} simulation (torch)"


def ort_label(scheme: str = "int8") -> str:
    return f"{scheme} (ONNX Runtime)"


def ours_label(scheme: str = "int8") -> str:
    return f"{scheme} (compress runtime)"


# The labels of the default scheme; a weight-only or dynamic model is labelled by what it is
# (``evaluate(scheme="int4 weight-only g128")``), so a table never calls a 4-bit file int8.
INT8_SIM, INT8_ORT, INT8_OURS = sim_label(), ort_label(), ours_label()


@dataclass
class Evaluation:
    """What ``evaluate`` measured; absent variants are simply missing from the dicts."""

    accuracy: dict[str, float] = field(default_factory=dict)  # top-1, percent
    agreement: dict[str, float] = field(default_factory=dict)  # percent of inputs with fp32's top-1
    latency_ms: dict[str, float] = field(default_factory=dict)
    sizes_bytes: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    latency_batch: int = 1
    threads: int = 1
    machine: str = ""  # CPU model, int8 features, the runtime's ISA path: every figure depends on them
    notes: list[str] = field(default_factory=list)  # ORT's exactness here, and why it disagrees if it does
    ort_vs_ours_top1: float | None = None  # percent of inputs where ORT int8 and our runtime pick one class
    scheme: str = "int8"  # what the quantized variants are: int8 static, int8 dynamic, int4 weight-only g128, ...

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        rows = ["| variant | top-1 (%) | agrees with fp32 (%) | latency (ms) | speed-up vs fp32 torch |",
                "|---|---:|---:|---:|---:|"]
        base = self.latency_ms.get(FP32_TORCH)
        for name in dict.fromkeys([*self.accuracy, *self.latency_ms]):
            acc = self.accuracy.get(name)
            agree = self.agreement.get(name)
            lat = self.latency_ms.get(name)
            speed = f"{base / lat:.2f}×" if base and lat else ""
            rows.append(
                f"| {name} | {'' if acc is None else f'{acc:.2f}'} | {'' if agree is None else f'{agree:.1f}'} "
                f"| {'' if lat is None else f'{lat:.3f}'} | {speed} |"
            )
        head = f"Accuracy over {self.samples} samples; " if self.samples else ""
        lines = [f"{head}latency: fastest run, batch {self.latency_batch}, {self.threads} thread(s).",
                 *([f"Machine: {self.machine}."] if self.machine else []), "", *rows]
        if self.sizes_bytes:
            lines += ["", "| file | size (KiB) |", "|---|---:|"]
            lines += [f"| {k} | {v / 1024:.1f} |" for k, v in self.sizes_bytes.items()]
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def ort_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no spinning between runs: on a small shared machine it steals the cores the next engine needs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _onnx_fn(session) -> Callable[[torch.Tensor], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy().astype(np.float32, copy=False)})[0]


def _torch_fn(model: nn.Module) -> Callable[[torch.Tensor], np.ndarray]:
    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x).numpy()

    return run


def best_ms(fn: Callable[[torch.Tensor], object], x: torch.Tensor, repeats: int, warmup: int = 2) -> float:
    """Fastest of ``repeats`` timed calls, in milliseconds."""
    for _ in range(warmup):
        fn(x)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _inputs(batch: object) -> torch.Tensor:
    return batch[0]  # type: ignore[index]  # (inputs, labels) batches, as the docstring of evaluate says


def evaluate(
    loader: Iterable,
    *,
    model: nn.Module | None = None,
    qmodel: nn.Module | None = None,
    int8_onnx: str | os.PathLike | None = None,
    fp32_onnx: str | os.PathLike | None = None,
    accuracy: bool = True,
    latency: bool = True,
    max_batches: int | None = None,
    latency_batch: int = 1,
    repeats: int = 20,
    threads: int = 1,
    progress: bool = True,
    scheme: str = "int8",
) -> Evaluation:
    """Measure every given variant on ``loader`` of (inputs, labels) batches.

    ``model``: the float model; ``qmodel``: its fake-quant simulation; ``int8_onnx``: the
    exported file, run by the bundled runtime and, when installed, by ONNX Runtime;
    ``fp32_onnx``: the float file, timed on ONNX Runtime. Every engine gets ``threads``.
    ``scheme`` names the quantized variants in the tables ("int8", "int4 weight-only g128", ...).
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engines: dict[str, Callable[[torch.Tensor], np.ndarray]] = {}
        if model is not None:
            engines[FP32_TORCH] = _torch_fn(model.eval())
        sim, ours, ort = sim_label(scheme), ours_label(scheme), ort_label(scheme)
        if qmodel is not None:
            engines[sim] = _torch_fn(qmodel.eval())
        if int8_onnx is not None:
            engines[ours] = _onnx_fn(InferenceSession(int8_onnx, threads=threads))
            if ort_available():
                engines[ort] = _onnx_fn(_ort_session(Path(int8_onnx), threads))
        result = Evaluation(latency_batch=latency_batch, threads=threads, machine=describe(), scheme=scheme)
        if accuracy:
            _accuracy(engines, loader, max_batches, progress, result, ours=ours, ort=ort)
            if ort in engines:
                _explain_ort(result)
        if latency:
            timed = dict(engines)
            timed.pop(sim, None)  # the simulation is a correctness tool, not a deployment target
            if fp32_onnx is not None and ort_available():
                timed[FP32_ORT] = _onnx_fn(_ort_session(Path(fp32_onnx), threads))
            x = _latency_input(loader, latency_batch)
            for name, fn in tqdm(timed.items(), desc="latency", disable=not progress):
                result.latency_ms[name] = best_ms(fn, x, repeats)
        for label, path in (("fp32 ONNX", fp32_onnx), (f"{scheme} ONNX", int8_onnx)):
            if path is not None:
                result.sizes_bytes[label] = Path(path).stat().st_size
        return result
    finally:
        torch.set_num_threads(threads_before)


def _accuracy(engines: dict, loader: Iterable, max_batches: int | None, progress: bool, result: Evaluation, *,
              ours: str, ort: str) -> None:
    correct = dict.fromkeys(engines, 0)
    agree = dict.fromkeys(engines, 0)
    engines_agree = total = 0
    for i, batch in enumerate(tqdm(loader, desc="evaluate", disable=not progress, total=max_batches)):
        if max_batches is not None and i >= max_batches:
            break
        x, y = _inputs(batch), np.asarray(batch[1])
        preds = {name: fn(x).argmax(1) for name, fn in engines.items()}
        ref = preds.get(FP32_TORCH)
        for name, p in preds.items():
            correct[name] += int((p == y).sum())
            if ref is not None:
                agree[name] += int((p == ref).sum())
        if ort in preds and ours in preds:
            engines_agree += int((preds[ort] == preds[ours]).sum())
        total += len(y)
    total = max(total, 1)
    result.samples = total
    result.accuracy = {n: 100.0 * c / total for n, c in correct.items()}
    if FP32_TORCH in engines:
        result.agreement = {n: 100.0 * a / total for n, a in agree.items() if n != FP32_TORCH}
    if ort in engines and ours in engines:
        result.ort_vs_ours_top1 = 100.0 * engines_agree / total


def _explain_ort(result: Evaluation) -> None:
    """Say whether ORT is exact on this CPU and, when its int8 top-1 departs from our runtime's
    (which equals the simulation), why and what fixes it: a warning, not a silent accuracy drop."""
    from export.validate import REDUCED_RANGE_ADVICE, probe_onnxruntime

    probe = probe_onnxruntime()
    result.notes.append(probe.note())
    same = result.ort_vs_ours_top1
    if same is None or same >= 100.0:
        return
    if probe.exact:
        why = (f"ONNX Runtime picks another class than the compress runtime on {100 - same:.1f}% of inputs although "
               "its integer kernels are exact here: a float op or a fusion differs; compare the outputs node by node")
    else:
        why = (f"ONNX Runtime picks another class than the compress runtime on {100 - same:.1f}% of inputs because "
               f"it saturates u8×s8 pair sums on this CPU: {REDUCED_RANGE_ADVICE}")
    result.notes.append(why)
    warnings.warn(why, stacklevel=3)


def _latency_input(loader: Iterable, batch: int) -> torch.Tensor:
    x = _inputs(next(iter(loader)))
    reps = -(-batch // len(x))
    return torch.cat([x] * reps)[:batch].contiguous()
