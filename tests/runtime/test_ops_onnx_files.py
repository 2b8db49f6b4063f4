"""Another tool's files through our runtime: a torchvision model exported by torch.onnx and
quantized by ONNX Runtime's quantize_static in all four forms (bench/onnx_files.py runs the
whole list)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.onnx_files import (
    FORMATS,
    agreement,
    export_fp32,
    layerwise,
    ort_run,
    output_step,
    quantize,
    reference_codes,
    self_check,
    teacher_forced,
)
from export.validate import probe_onnxruntime
from runtime import InferenceSession


@pytest.mark.slow
def test_squeezenet_fp32_and_ort_quantized_files_run_like_ort_and_the_reference(tmp_path):
    size = 64
    x = np.random.default_rng(2).standard_normal((1, 3, size, size), dtype=np.float32)
    fp32 = tmp_path / "m.onnx"
    export_fp32("squeezenet1_1", fp32, size)
    ours = InferenceSession(str(fp32), threads=1).run(None, {"input": x})[0]
    theirs = ort_run(fp32, x)
    assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    ort_exact = probe_onnxruntime().exact
    for fmt, act in FORMATS:
        path = quantize(fp32, tmp_path / f"m_{fmt}_{act}.onnx", size, fmt, act)
        ours = InferenceSession(str(path), threads=1).run(None, {"input": x})[0]
        step = output_step(path)
        if fmt == "qdq":
            # each quantized tensor, recomputed by the reference from our codes of its inputs
            layers, compared, total, shapes = layerwise(path, x)
            assert layers.identical >= 0.999 and layers.max_steps <= 1 and compared >= total - 1 and not shapes
            # teacher forcing: each tensor ours from the reference's codes of its inputs
            ref = reference_codes(path, x)
            forced = teacher_forced(path, x, step, ref)
            assert forced.layers.identical >= 0.9999 and forced.layers.max_steps <= 1, forced
            # where a code differs, the layer in float64 sides with one of the two roundings
            assert forced.ours_exact + forced.reference_exact >= forced.differing or not forced.differing, forced
            # end to end, one-step differences compound through the layers; the predicted class stays
            out = next(iter(ref.values()))
            assert ours.argmax() == out.argmax(), (fmt, act)
            # the reference summed the textbook float32 way, against its default run: every tensor compared
            check = self_check(path, x, step, "sequential", ref, ours)
            assert check.quantized == total and check.ours is not None, check
        # ORT runs QDQ files with int8 activations as float DQ -> op -> Q here (its output is the
        # reference's exactly): the integer forms are the ones to equal
        if ort_exact and (fmt, act) != ("qdq", "s8"):
            vs_ort = agreement(ours, ort_run(path, x), step)
            assert vs_ort.identical >= 0.999 and vs_ort.max_steps <= 1, (fmt, act, vs_ort)
