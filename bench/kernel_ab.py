"""Two builds of the C kernels in one process, interleaved: time (and identical outputs) per case.

On a shared machine whose load swings from 2 to 8, timing an old and a new build in separate
processes mostly measures the load.  Here both extensions are loaded into one process (under
distinct module names: Python caches extension modules by name, so two builds loaded as
``runtime._kernels`` would be one module), every case runs once per round on each build, the
order alternating between rounds (whoever runs second finds the inputs in cache), and the
fastest calling-thread CPU time of each counts.  Every case asserts that both builds wrote
identical bytes.  Cases are mobilenet_v2's 1x1 convolutions as GEMMs (M x K x N at batch 1),
its 3x3 depthwise convolutions, and (``--cases resnet18``) resnet18's convolutions as GEMMs,
called straight through the C entry points (no Python wrapper), weights prepared once as the
runtime does.

    python bench/kernel_ab.py OLD_TREE [NEW_TREE] [--cases gemm dw resnet18] [--rounds 60] [--isa avx2]

``OLD_TREE`` is a tree with a built extension, e.g. ``git archive <commit> runtime setup.py
pyproject.toml | tar -x -C /tmp/old`` then ``python setup.py build_ext --inplace`` there;
``NEW_TREE`` defaults to this checkout.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import time
from pathlib import Path
from types import ModuleType

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PATH_IDS = {"portable": 0, "avx2": 1, "avx512vnni": 2, "amx": 3}

# (M, K, N) of mobilenet_v2's 1x1 convolutions at batch 1 (pixels, input and output channels)
GEMMS = [
    (12544, 32, 16), (12544, 16, 96), (3136, 96, 24), (3136, 24, 144), (3136, 144, 24), (784, 144, 32),
    (784, 32, 192), (784, 192, 32), (196, 64, 384), (196, 384, 64), (196, 96, 576), (196, 576, 96),
    (49, 160, 960), (49, 960, 160), (49, 320, 1280),
]  # fmt: skip
# resnet18's convolutions as GEMMs at batch 1 (im2col depth K = kh * kw * C_in): the 7x7 stem,
# 3x3 convolutions per stage, 1x1 downsamples
RESNET18 = [
    (12544, 147, 64), (3136, 576, 64), (784, 576, 128), (784, 1152, 128), (784, 64, 128), (196, 1152, 256),
    (196, 2304, 256), (49, 2304, 512), (49, 4608, 512), (49, 256, 512),
]  # fmt: skip
# (H = W, C, stride) of mobilenet_v2's 3x3 depthwise convolutions (pad 1)
DEPTHWISE = [
    (112, 32, 1), (112, 96, 2), (56, 144, 1), (56, 144, 2), (28, 192, 1), (28, 192, 2), (14, 384, 1),
    (14, 576, 1), (14, 576, 2), (7, 960, 1),
]  # fmt: skip


def load_build(tree: Path, tag: str) -> ModuleType:
    """The ``_kernels`` extension built in ``tree``, as module ``ab_<tag>._kernels``."""
    found = sorted((tree / "runtime").glob("_kernels*.so"))
    if not found:
        raise SystemExit(f"no built runtime/_kernels*.so under {tree} (python setup.py build_ext --inplace there)")
    name = f"ab_{tag}._kernels"  # the init symbol depends only on the last part
    loader = importlib.machinery.ExtensionFileLoader(name, str(found[0]))
    spec = importlib.util.spec_from_file_location(name, found[0], loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def gemm_case(builds, m: int, k: int, n: int, path: int, rng) -> tuple[str, list, list, float]:
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    bias = rng.integers(-5000, 5000, n, dtype=np.int32)
    mult = np.full(n, 3e-4, np.float32)
    calls, outs = [], []
    for mod in builds:
        packed = mod.pack_weights(w, n, k)
        out = np.empty((m, n), np.uint8)
        outs.append(out)
        calls.append((mod.qgemm, (a, m, k, packed, bias, mult, 3, 0, 255, n, out, 1, path)))
    return f"gemm {m}x{k}x{n}", calls, outs, 2.0 * m * k * n


def depthwise_case(builds, hw: int, c: int, s: int, path: int, rng) -> tuple[str, list, list, float]:
    x = rng.integers(0, 256, (1, hw, hw, c), dtype=np.uint8)
    w = rng.integers(-128, 128, (3, 3, c), dtype=np.int8)
    bias = rng.integers(-5000, 5000, c, dtype=np.int32)
    mult = np.full(c, 2e-4, np.float32)
    o = (hw + 2 - 3) // s + 1
    calls, outs = [], []
    for mod in builds:
        prepared = mod.pack_depthwise(w, 3, 3, c)
        out = np.empty((1, o, o, c), np.uint8)
        outs.append(out)
        args = (x, 1, hw, hw, c, prepared, 3, 3, s, s, 1, 1, 1, 1, 1, 1, 7, bias, mult, 3, 0, 255, out, 1, path)
        calls.append((mod.qdepthwise, args))
    return f"depthwise {hw}x{hw}x{c} s{s}", calls, outs, 2.0 * 9 * c * o * o


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="tree with the old build")
    parser.add_argument("new", type=Path, nargs="?", default=ROOT, help="tree with the new build (this checkout)")
    parser.add_argument("--cases", nargs="+", choices=["gemm", "dw", "resnet18"], default=["gemm", "dw"])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--isa", choices=list(PATH_IDS), default="avx512vnni")
    args = parser.parse_args()
    builds = [load_build(args.old, "old"), load_build(args.new, "new")]
    if builds[0].qgemm is builds[1].qgemm:
        raise SystemExit("both trees resolved to one extension module")
    path, rng = PATH_IDS[args.isa], np.random.default_rng(0)
    cases = [gemm_case(builds, *shape, path, rng) for shape in GEMMS] if "gemm" in args.cases else []
    cases += [depthwise_case(builds, *shape, path, rng) for shape in DEPTHWISE] if "dw" in args.cases else []
    cases += [gemm_case(builds, *shape, path, rng) for shape in RESNET18] if "resnet18" in args.cases else []
    best = {name: [float("inf")] * 2 for name, *_ in cases}
    for r in range(args.rounds):
        for name, calls, _, _ in cases:
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                fn, call_args = calls[i]
                start = time.thread_time()
                fn(*call_args)
                best[name][i] = min(best[name][i], time.thread_time() - start)
    print(f"path {args.isa}, fastest of {args.rounds} interleaved rounds, calling-thread CPU time\n")
    print("| case | old (µs) | new (µs) | old / new | new GOPS |\n|---|---|---|---|---|")
    total = [0.0, 0.0]
    for name, _, outs, ops in cases:
        if not np.array_equal(outs[0], outs[1]):
            raise SystemExit(f"{name}: the two builds' outputs differ")
        old, new = best[name]
        total[0] += old
        total[1] += new
        print(f"| {name} | {old * 1e6:.1f} | {new * 1e6:.1f} | {old / new:.2f} | {ops / new / 1e9:.0f} |")
    print(f"| total | {total[0] * 1e6:.0f} | {total[1] * 1e6:.0f} | {total[0] / total[1]:.2f} | |")


if __name__ == "__main__":
    main()
