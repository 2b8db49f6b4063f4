"""The ONNX Runtime exactness probe (issue 11): its expected answers are the exact ones, an engine
that saturates u8×s8 pair sums in int16 (vpmaddubsw, x86 without VNNI) cannot reproduce them, and
what it reports matches what ORT does on this machine."""

import numpy as np
import pytest

import runtime
from export.validate import _probe_models, probe_onnxruntime
from runtime.machine import cpu_model, has_vnni


def _saturating_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """u8×s8 → s32 as vpmaddubsw + vpmaddwd compute it: each pair of products saturates to int16."""
    prods = a.astype(np.int64)[:, :, None] * b.astype(np.int64)[None, :, :]  # (m, k, n)
    pairs = prods[:, 0::2, :] + prods[:, 1::2, :]
    return np.clip(pairs, -(2**15), 2**15 - 1).sum(axis=1).astype(np.int32)


def test_expected_answers_are_exact_and_our_runtime_computes_them():
    for name, model, feed, want in _probe_models(64):
        got = runtime.InferenceSession(model, threads=1).run(None, feed)[0]
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_a_saturating_engine_fails_the_probe():
    name, _, feed, want = _probe_models(64)[0]
    assert name == "MatMulInteger"
    b = np.full((64, 16), 127, np.int8)
    saturated = _saturating_matmul(feed["a"], b)
    assert int(saturated[0, 0]) == 32 * (2**15 - 1) and not np.array_equal(saturated, want)


def test_probe_reports_this_machine():
    pytest.importorskip("onnxruntime")
    probe = probe_onnxruntime()
    assert cpu_model() in probe.machine and probe.machine in probe.note()
    if not probe.exact:  # ORT saturates only where the CPU lacks a VNNI form
        assert not has_vnni(), probe
        assert "weight_range='reduced'" in probe.note()
