"""Pruning composes with quantization: int8 latency of structurally pruned resnet18 in our runtime.

For 0%, 30% and 50% of channels removed (``compress.prune``, random weights, seed 0), the
model is quantized (``compress.quantize``, 2 random calibration batches), exported by
``compress.export_onnx`` and timed at 224×224, batch 1, 1 thread: our runtime and ONNX
Runtime on the same int8 file, torch fp32 eager as the baseline. Fastest of N runs.

    python bench/prune_runtime_latency.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from runtime_latency import best_ms  # noqa: E402  (sibling script in bench/)

import compress  # noqa: E402
import runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = torch.randn(1, 3, 224, 224)
    calib = [torch.randn(4, 3, 224, 224) for _ in range(2)]
    folder = Path(tempfile.mkdtemp(prefix="prune_rt_"))
    print("| resnet18, channels pruned | params (M) | int8 file (MB) | torch fp32 (ms) | ORT int8 (ms) "
          "| ours int8 (ms) | ours vs dense ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    dense_ours = None
    for amount in (0.0, 0.3, 0.5):
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
        if amount:
            model = compress.prune(model, amount=amount, structured=True, scope="layer", example_inputs=(x,),
                                   protect=["fc"]).eval()
        q = compress.quantize(model, calib, progress=False)
        path = compress.export_onnx(q, folder / f"r18_{int(amount * 100)}.onnx", (x,))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        peer = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ours = runtime.InferenceSession(str(path), threads=1)
        feed = {ours.get_inputs()[0].name: x.numpy()}
        with torch.no_grad():
            t_torch = best_ms(args.repeats, model, x)
        t_ort = best_ms(args.repeats, peer.run, None, feed)
        t_ours = best_ms(args.repeats, ours.run, None, feed)
        dense_ours = dense_ours or t_ours
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"| {int(amount * 100)}% | {params:.2f} | {path.stat().st_size / 1e6:.1f} | {t_torch:.1f} | "
              f"{t_ort:.2f} | {t_ours:.2f} | {dense_ours / t_ours:.2f}× |")


if __name__ == "__main__":
    main()
