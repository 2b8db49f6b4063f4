"""Latency of the bundled int8 runtime against its peers, in one process, interleaved.

resnet18 and mobilenet_v2 (torchvision, random weights with a fixed seed: latency does not
depend on the values) at 224x224 are exported to ONNX and quantized by ONNX Runtime's
quantize_static (QDQ, uint8 activations, int8 per-channel weights).  For each batch and thread
count, every peer runs once per round, round after round (interleaved, so a burst of load
from other processes hits all peers alike), and the fastest round of each counts: ORT int8 on
the same file as ours, ORT fp32, OpenVINO int8 on the same QDQ file when ``openvino`` is
installed (never required), torch fp32 eager with ``--torch``.  Ratios are peer time / ours.

``--overhead`` also times our session with every C kernel replaced by a no-op (what is left: Python
dispatch and the numpy ops), at batch 1, one thread.  Run with ``PYTHONPATH=<another tree>`` to measure
another build of ``runtime`` (before / after), the bench itself unchanged.

``--isa avx2`` forces the runtime's instruction-set path (as $COMPRESS_RUNTIME_ISA does);
``--layers`` adds a per-layer table of our runtime (ms, GOPS and % of the path's measured peak
per conv kind: 1x1, kxk, depthwise) for the first model at batch 1, one thread.

    python bench/runtime_latency.py [--models resnet18 mobilenet_v2] [--rounds 20] [--isa avx2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
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
            self.items = iter([{"input": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)} for _ in range(4)])

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


def interleaved_ms(
    peers: dict[str, Callable[[], object]], rounds: int, warmup: int = 2
) -> tuple[dict[str, float], dict[str, float]]:
    """Fastest wall time and fastest calling-thread CPU time (ms) of each peer over ``rounds``
    rounds that run every peer once.  The CPU time is only meaningful for a peer that computes
    on the calling thread (ours and ORT at one thread): there it ignores slices lost to other
    processes, which on a loaded shared machine dominate the wall time."""
    for fn in peers.values():
        for _ in range(warmup):
            fn()
    wall = dict.fromkeys(peers, float("inf"))
    cpu = dict.fromkeys(peers, float("inf"))
    for _ in range(rounds):
        for name, fn in peers.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            cpu[name] = min(cpu[name], (time.thread_time() - start_cpu) * 1e3)
            wall[name] = min(wall[name], (time.perf_counter() - start) * 1e3)
    return wall, cpu


def openvino_runner(path: Path, threads: int):
    """OpenVINO on the same QDQ file (it executes QDQ int8 natively), or None when not installed."""
    try:
        import openvino as ov
    except ImportError:
        return None
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads})
    return lambda x: compiled([x])


def peers_for(exported: tuple[object, Path, Path], threads: int, isa: str | None, with_torch: bool):
    import onnxruntime as ort

    import runtime

    model, fp32, int8 = exported
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ort_fp32 = ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
    ort_int8 = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    ours = runtime.InferenceSession(int8, threads=threads, isa=isa)
    peers: dict[str, Callable[[np.ndarray], object]] = {
        "ours int8": lambda x: ours.run(None, {"input": x}),
        "ORT int8": lambda x: ort_int8.run(None, {"input": x}),
        "ORT fp32": lambda x: ort_fp32.run(None, {"input": x}),
    }
    ov = openvino_runner(int8, threads)
    if ov is not None:
        peers["OpenVINO int8"] = ov
    if with_torch:
        import torch

        def torch_fp32(x):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return model(torch.from_numpy(x))

        peers["torch fp32"] = torch_fp32
    return peers, ours


def layer_table(session, x: np.ndarray, path: str, peak: float, rounds: int) -> str:
    """Per-node times of our session (fastest of ``rounds`` runs), conv nodes grouped by kind.

    Calling-thread CPU time, not wall time: the layer table runs at one thread, so every kernel
    computes on this thread, and on a shared machine a node's wall minimum still carries time
    slices lost to other processes (at load 5 the nodes' wall sum read 5.4 ms for a 4.5 ms run)."""
    graph = session.graph
    nodes = graph.nodes
    kernels = session._kernels  # the bench wraps the prepared per-node callables with timers
    best = [float("inf")] * len(nodes)
    shapes: dict[int, tuple] = {}

    def timed(i, fn):
        def run(*args):
            start = time.thread_time()
            out = fn(*args)
            best[i] = min(best[i], time.thread_time() - start)
            shapes[i] = out[0].shape if out and hasattr(out[0], "shape") else ()
            return out

        return run

    original = list(kernels)
    kernels[:] = [timed(i, fn) for i, fn in enumerate(original)]
    try:
        for _ in range(rounds):
            session.run(None, {"input": x})
    finally:
        kernels[:] = original
    groups: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])  # count, seconds, ops
    for i, node in enumerate(nodes):
        kind = node.op_type
        ops = 0.0
        if node.op_type == "QLinearConv":
            w = graph.const(node.inputs[3])
            cout, cin_g, kh, kw = w.shape
            group = int(node.attrs.get("group", 1))
            out = shapes[i]
            pixels = int(np.prod(out)) // cout
            ops = 2.0 * pixels * cout * cin_g * kh * kw
            if group > 1 and cin_g == 1:
                kind = f"conv depthwise {kh}x{kw}"
            else:
                kind = f"conv {kh}x{kw}" + (f" g{group}" if group > 1 else "")
        g = groups[kind]
        g[0] += 1
        g[1] += best[i]
        g[2] += ops
    total = sum(g[1] for g in groups.values())
    lines = [
        f"| node kind | count | ms | % of time | GOPS | % of {path} peak ({peak:.0f} GOPS) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, (count, secs, ops) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        gops = ops / secs / 1e9 if ops else 0.0
        lines.append(
            f"| {kind} | {count} | {secs * 1e3:.2f} | {100 * secs / total:.0f} | "
            + (f"{gops:.0f} | {100 * gops / peak:.0f} |" if ops else "– | – |")
        )
    lines.append(f"| total (sum of nodes) | {len(nodes)} | {total * 1e3:.2f} | 100 | | |")
    return "\n".join(lines)


def overhead_ms(path: Path, isa: str | None, rounds: int) -> float:
    """Calling-thread CPU time (fastest of ``rounds``, ms) of one batch-1 inference with every C
    kernel a no-op: the per-inference cost outside the kernels."""
    import runtime
    from runtime import _kernels

    names = [n for n in ("qgemm", "qconv", "qdepthwise", "qadd", "maxpool") if hasattr(_kernels, n)]
    saved = {n: getattr(_kernels, n) for n in names}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    try:
        for n in names:
            setattr(_kernels, n, lambda *args: None)
        session = runtime.InferenceSession(path, threads=1, isa=isa)
        _, cpu = interleaved_ms({"ours": lambda: session.run(None, {"input": x})}, rounds)
    finally:
        for n, fn in saved.items():
            setattr(_kernels, n, fn)
    return cpu["ours"]


def markdown(rows: list[dict], peer_names: list[str]) -> str:
    others = [p for p in peer_names if p != "ours int8"]
    head = (
        "| model | batch | threads | ours int8 (ms) | "
        + " | ".join(f"{p} (ms)" for p in others)
        + " | "
        + " | ".join(f"{p} / ours" for p in others)
        + " | ORT int8 / ours, thread CPU time (1 thread) |"
    )
    lines = [head, "|" + "---|" * (5 + 2 * len(others))]
    for r in rows:
        ours = r["ours int8"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['threads']} | {ours:.2f} | "
            + " | ".join(f"{r[p]:.2f}" for p in others)
            + " | "
            + " | ".join(f"{r[p] / ours:.2f}" for p in others)
            + (f" | {r['cpu ratio']:.2f} |" if r["cpu ratio"] else " | – |")
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds at batch 1 (a quarter at 16)")
    parser.add_argument("--isa", default=None, help="force the runtime's instruction-set path")
    parser.add_argument("--torch", action="store_true", help="add torch fp32 eager as a peer")
    parser.add_argument("--layers", action="store_true", help="per-layer table of the first model")
    parser.add_argument("--overhead", action="store_true", help="also time ours with the C kernels as no-ops")
    args = parser.parse_args()
    from runtime import kernels
    from runtime.errors import InferenceError
    from runtime.machine import describe

    path = args.isa or os.environ.get(kernels.ISA_ENV) or kernels.available_paths()[-1]
    print(f"machine: {describe(path)}", flush=True)
    rows, names, layers = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            exported = export_and_quantize(name, Path(tmp))
            for t in args.threads:
                peers, ours = peers_for(exported, t, args.isa, args.torch)
                names = list(peers)
                for b in args.batches:
                    x = np.random.default_rng(b).standard_normal((b, 3, 224, 224), dtype=np.float32)
                    rounds = args.rounds if b == 1 else max(3, args.rounds // 4)
                    ms, cpu = interleaved_ms({k: (lambda f=f, x=x: f(x)) for k, f in peers.items()}, rounds)
                    cpu_ratio = cpu["ORT int8"] / cpu["ours int8"] if t == 1 else None
                    rows.append({"model": name, "batch": b, "threads": t, "cpu ratio": cpu_ratio, **ms})
                    print(f"  {name} b{b} t{t}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()), flush=True)
                    if t == 1:
                        both = ", ".join(f"{k} {cpu[k]:.2f} ms" for k in ("ours int8", "ORT int8"))
                        print(f"    thread CPU time: {both}", flush=True)
                    if args.layers and layers is None and b == 1 and t == 1:
                        try:
                            peak = kernels.peak_gops(path)
                        except InferenceError:  # a path without a peak loop (portable, amx)
                            peak = float("nan")
                        layers = (name, layer_table(ours, x, path, peak, args.rounds))
            if args.overhead:
                overhead = overhead_ms(exported[2], args.isa, args.rounds)
                print(f"  {name}: per-inference overhead, C kernels as no-ops: {overhead:.2f} ms CPU", flush=True)
    print(f"\nmachine: {describe(path)}")
    print(markdown(rows, names))
    if layers:
        print(f"\nper layer, {layers[0]}, batch 1, 1 thread, path {path}:\n{layers[1]}")


if __name__ == "__main__":
    main()
