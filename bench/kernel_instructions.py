"""Instruction counts of the C kernels under callgrind: repeatable whatever else the machine
runs, so kernel changes are compared by counts as well as by (noisy) time.

Each case (a GEMM, a k x k convolution, a 1x1 convolution, a depthwise convolution, per
instruction-set path) runs once in a fresh ``valgrind --tool=callgrind`` process; the count is
the instructions executed in the extension's own C code (every function compiled from
``runtime/csrc``; the C library's memcpy/memset the packing calls are not included), minus
those of the setup alone (weight packing), measured once per build.
Valgrind does not execute AVX-512, so only the portable and AVX2 paths can be counted.  With
``--other DIR`` the same cases also run against another build of the ``runtime`` package
(e.g. an older commit: ``git archive <commit> runtime setup.py | tar -x -C DIR`` and
``python setup.py build_ext --inplace`` there), and the table gives both counts and the ratio.

    python bench/kernel_instructions.py [--paths avx2 avx512vnni] [--other /tmp/old]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: python statement run once after setup
CASES = {
    "gemm 256x256x256": "kernels.gemm(a256, p256, st256, 1, PATH)",
    "conv 3x3 56x56x64->64": "kernels.conv_nhwc(x56, p3, g3, 7, st64, 1, PATH)",
    "conv 1x1 56x56x64->64": "kernels.conv_nhwc(x56, p1, g1, 7, st64, 1, PATH)",
    "depthwise 3x3 56x56x144": "kernels.depthwise_nhwc(xd, wdp, g3, 7, st144, 1, PATH)",
    "depthwise 3x3 7x7x960": "kernels.depthwise_nhwc(xs, wsp, g3, 7, st960, 1, PATH)",
}

SETUP = """
import numpy as np
from runtime import kernels
r = np.random.default_rng(0)
a256 = r.integers(0, 256, (256, 256), dtype=np.uint8)
p256 = kernels.pack_weights(r.integers(-128, 128, (256, 256), dtype=np.int8))
st256 = kernels.OutputStage(np.zeros(256, np.int32), np.full(256, 1e-4, np.float32), 0, 0, 255)
x56 = r.integers(0, 256, (1, 56, 56, 64), dtype=np.uint8)
p3 = kernels.pack_weights(r.integers(-128, 128, (64, 576), dtype=np.int8))
p1 = kernels.pack_weights(r.integers(-128, 128, (64, 64), dtype=np.int8))
g3 = kernels.ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
g1 = kernels.ConvGeometry((1, 1))
st64 = kernels.OutputStage(np.zeros(64, np.int32), np.full(64, 1e-4, np.float32), 3, 0, 255)
xd = r.integers(0, 256, (1, 56, 56, 144), dtype=np.uint8)
wd = r.integers(-128, 128, (3, 3, 144), dtype=np.int8)
# Prepared once as the runtime does (a build without pack_depthwise prepares on every call).
wdp = kernels.pack_depthwise(wd) if hasattr(kernels, "pack_depthwise") else wd
xs = r.integers(0, 256, (1, 7, 7, 960), dtype=np.uint8)
ws = r.integers(-128, 128, (3, 3, 960), dtype=np.int8)
wsp = kernels.pack_depthwise(ws) if hasattr(kernels, "pack_depthwise") else ws
st960 = kernels.OutputStage(np.zeros(960, np.int32), np.full(960, 1e-4, np.float32), 3, 0, 255)
st144 = kernels.OutputStage(np.zeros(144, np.int32), np.full(144, 1e-4, np.float32), 3, 0, 255)
"""


def count(package_dir: Path, statement: str) -> int:
    """Instructions executed in runtime/csrc functions during the script (setup runs no kernel)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "case.py"
        script.write_text(SETUP + statement + "\n")
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": str(package_dir)}
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        subprocess.run(
            [*command, sys.executable, str(script)],
            check=True,
            capture_output=True,
            cwd=tmp,
            env=env,
        )
        report = subprocess.run(
            ["callgrind_annotate", "--threshold=100", str(out)], check=True, capture_output=True, text=True
        ).stdout
        return sum(
            int(re.match(r"\s*([\d,]+)", line).group(1).replace(",", ""))
            for line in report.splitlines()
            if "csrc/" in line and re.match(r"\s*[\d,]+ ", line) and "=>" not in line
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", nargs="+", default=["avx2"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--other", type=Path, default=None, help="folder holding another build of runtime/")
    args = parser.parse_args()
    builds = {"this tree": ROOT} | ({"other": args.other} if args.other else {})
    setup = {b: count(d, "pass") for b, d in builds.items()}
    head = "| kernel | path | " + " | ".join(f"{b} (instructions)" for b in builds)
    head += " | other / this |" if args.other else " |"
    lines = [head, "|" + "---|" * (2 + len(builds) + (1 if args.other else 0))]
    for name in args.cases:
        statement = CASES[name]
        for path in args.paths:
            counts = {b: count(d, statement.replace("PATH", repr(path))) - setup[b] for b, d in builds.items()}
            row = f"| {name} | {path} | " + " | ".join(f"{c:,}" for c in counts.values())
            row += f" | {counts['other'] / counts['this tree']:.2f} |" if args.other else " |"
            lines.append(row)
            print(row, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
