"""u8 x s8 -> s32 GEMM throughput of the runtime's C kernels, per instruction-set path,
against ONNX Runtime's MatMulInteger in the same process and each path's measured peak.

Our kernels include the fused requantization to uint8 (the form convolutions use); ORT's
MatMulInteger returns int32.  Single thread.  GOPS = 2*M*N*K / time.  Every peer runs once per
round, round after round (interleaved), and the fastest round counts; time is this thread's
CPU time (``--wall`` for wall time), so slices lost to other processes on a shared machine do
not count.  A path's peak is measured, not assumed from a clock: a register-only loop of its
multiply-accumulate instructions in its micro-kernel's mix (``runtime.kernels.peak_gops``).

    python bench/gemm.py [--rounds 10] [--wall]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime import kernels
from runtime.errors import InferenceError
from runtime.machine import describe

SHAPES = [(256, 256, 256), (1024, 1024, 1024), (3136, 64, 576), (196, 256, 2304)]


def ort_matmul_integer(k: int, b: np.ndarray):
    import onnxruntime as ort

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", b.shape[1]])],
        [onnx.numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def interleaved_seconds(peers: dict, rounds: int, clock) -> dict[str, float]:
    """Fastest time of each peer over rounds that run every peer once, after one warm-up."""
    for fn in peers.values():
        fn()
    best = dict.fromkeys(peers, float("inf"))
    for _ in range(rounds):
        for name, fn in peers.items():
            start = clock()
            fn()
            best[name] = min(best[name], clock() - start)
    return best


def measure_shape(m: int, n: int, k: int, paths: list[str], rounds: int, clock, rng) -> dict[str, float]:
    """GOPS of each path and of ORT on one random M x N x K problem."""
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-127, 128, (n, k), dtype=np.int8)
    packed = kernels.pack_weights(w)
    stage = kernels.OutputStage(np.zeros(n, np.int32), np.full(n, 1e-4, np.float32), 0, 0, 255)
    sess = ort_matmul_integer(k, np.ascontiguousarray(w.T))
    peers = {p: (lambda p=p: kernels.gemm(a, packed, stage, 1, p)) for p in paths if p != "portable"}
    peers["ORT"] = lambda: sess.run(None, {"a": a})
    secs = interleaved_seconds(peers, rounds, clock)
    if "portable" in paths:  # ~30x slower: a couple of rounds are enough
        secs["portable"] = interleaved_seconds({"p": lambda: kernels.gemm(a, packed, stage, 1, "portable")}, 2, clock)[
            "p"
        ]
    return {name: 2 * m * n * k / s / 1e9 for name, s in secs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--wall", action="store_true", help="wall time instead of this thread's CPU time")
    parser.add_argument("--paths", nargs="+", default=None, help="paths to measure (default: all available)")
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.thread_time
    paths = args.paths or kernels.available_paths()
    peaks = {}
    for p in paths:
        try:
            peaks[p] = kernels.peak_gops(p)
        except InferenceError:  # no peak loop (portable, amx)
            peaks[p] = float("nan")
    best_path = paths[-1]
    rng = np.random.default_rng(0)
    lines = [
        "| M x N x K | "
        + " | ".join(f"{p} (GOPS)" for p in paths)
        + " | ORT MatMulInteger (GOPS) | "
        + " | ".join(f"{p} / ORT | {p} / its peak" for p in paths if p != "portable")
        + " |",
        "|" + "---|" * (2 + len(paths) + 2 * len([p for p in paths if p != "portable"])),
    ]
    for m, n, k in SHAPES:
        gops = measure_shape(m, n, k, paths, args.rounds, clock, rng)
        lines.append(
            f"| {m} x {n} x {k} | "
            + " | ".join(f"{gops[p]:.0f}" for p in paths)
            + f" | {gops['ORT']:.0f} | "
            + " | ".join(f"{gops[p] / gops['ORT']:.2f} | {gops[p] / peaks[p]:.0%}" for p in paths if p != "portable")
            + " |"
        )
    print(f"machine: {describe(best_path)}")
    print("single thread, " + ("wall" if args.wall else "thread CPU") + " time, fastest of interleaved rounds")
    print("measured peaks: " + ", ".join(f"{p} {v:.0f} GOPS" for p, v in peaks.items() if v == v))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
