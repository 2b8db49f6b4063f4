"""u8 x s8 -> s32 GEMM throughput of the runtime's C kernels, per instruction-set path,
against ONNX Runtime's MatMulInteger in the same process and the machine's VNNI peak.

Our kernels include the fused requantization to uint8 (the form convolutions use); ORT's
MatMulInteger returns int32.  Single thread.  GOPS = 2*M*N*K / time.  The VNNI peak is
2 vpdpbusd per cycle x 64 MACs x 2 ops at the clock /proc/cpuinfo reports.

    python bench/gemm.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime import kernels

SHAPES = [(256, 256, 256), (1024, 1024, 1024), (3136, 64, 576), (196, 256, 2304)]


def seconds(repeats: int, fn, *args) -> float:
    """Median wall time of fn(*args) in seconds, after one warm-up call."""
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cpu_ghz() -> float | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next(float(line.split(":")[1]) / 1000 for line in f if line.startswith("cpu MHz"))
    except (OSError, StopIteration):
        return None


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    paths = kernels.available_paths()
    ghz = cpu_ghz()
    peak = 2 * 64 * 2 * ghz if ghz else float("nan")
    rng = np.random.default_rng(0)
    lines = [
        "| M x N x K | " + " | ".join(f"{p} (GOPS)" for p in paths) + " | ORT MatMulInteger (GOPS) "
        "| best / ORT | best / VNNI peak |",
        "|" + "---|" * (len(paths) + 4),
    ]
    for m, n, k in SHAPES:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = rng.integers(-127, 128, (n, k), dtype=np.int8)
        packed = kernels.pack_weights(w)
        stage = kernels.OutputStage(np.zeros(n, np.int32), np.full(n, 1e-4, np.float32), 0, 0, 255)
        ops = 2 * m * n * k
        gops = {}
        for p in paths:
            reps = max(1, args.repeats // 5) if p == "portable" else args.repeats
            gops[p] = ops / seconds(reps, kernels.gemm, a, packed, stage, 1, p) / 1e9
        sess = ort_matmul_integer(k, np.ascontiguousarray(w.T))
        ort_gops = ops / seconds(args.repeats, sess.run, None, {"a": a}) / 1e9
        best = max(gops.values())
        lines.append(
            f"| {m} x {n} x {k} | "
            + " | ".join(f"{gops[p]:.0f}" for p in paths)
            + f" | {ort_gops:.0f} | {best / ort_gops:.2f} | {best / peak:.2f} |"
        )
    print(f"single thread; VNNI peak {peak:.0f} GOPS at {ghz:.2f} GHz (2 x 512-bit vpdpbusd per cycle)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
