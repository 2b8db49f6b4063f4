"""The C entry points called directly, as a hostile caller would: sizes whose products overflow
64 bits (or wrap to 0), sizes that disagree with the buffers, absurd thread counts and
non-finite multipliers must raise ValueError/OverflowError (InferenceError through
runtime.kernels), never crash or touch memory outside the buffers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import _kernels, kernels
from runtime.errors import InferenceError

REFUSED = (ValueError, OverflowError)
EXTREMES = [0, 1, 2, 3, 7, 2**16, 2**21, 2**22, 2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63 - 1, -1, -(2**63)]
sizes = st.one_of(st.integers(1, 6), st.sampled_from(EXTREMES))

X = np.zeros(256, np.uint8)
BIAS, MULT = np.zeros(64, np.int32), np.full(64, 1e-3, np.float32)


def conv_args(x, batch, h, w, c, weights, kh, kw, out, threads=1, mult=MULT, pads=(0, 0, 0, 0)):
    return (x, batch, h, w, c, weights, kh, kw, 1, 1, 1, 1, *pads, 0, BIAS, mult, 0, 0, 255, out, threads, 0)


def fits(buffer_bytes: int, *dims: int) -> bool:
    """Exact big-integer check: do dims (all in [1, 2^31)) fit in the buffer?"""
    if any(d < 1 or d >= 2**31 for d in dims):
        return False
    return int(np.prod([int(d) for d in dims], dtype=object)) <= buffer_bytes


@pytest.mark.parametrize(
    "batch,h,w",
    [(2**21, 2**21, 2**22), (2**31 - 1, 2**31 - 1, 2**31 - 1), (2**31 - 1, 2**31 - 1, 4)],
    ids=["wraps-to-zero", "2^93", "2^64-ish"],
)
def test_products_that_overflow_64_bits_are_refused(batch, h, w):
    out = np.zeros(256, np.uint8)
    packed = kernels.pack_weights(np.ones((1, 1), np.int8))
    with pytest.raises(REFUSED):
        _kernels.qconv(*conv_args(X, batch, h, w, 1, packed, 1, 1, out))
    with pytest.raises(REFUSED):
        _kernels.qdepthwise(*conv_args(X, batch, h, w, 1, np.ones(1, np.int8), 1, 1, out))
    with pytest.raises(REFUSED):
        _kernels.maxpool(X, batch, h, w, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, out, 0, 1)


def test_window_products_that_wrap_are_refused():
    """kh x kw x c wrapping to the packed depth must not pass as a match."""
    packed = kernels.pack_weights(np.ones((1, 1), np.int8))
    out = np.zeros(256, np.uint8)
    with pytest.raises(REFUSED):
        _kernels.qconv(*conv_args(X, 1, 2**31 - 1, 2**31 - 1, 2**31 - 1, packed, 2**31 - 1, 2**31 - 1, out))
    with pytest.raises(REFUSED):  # 2^22 taps: more than the int32 accumulators allow
        _kernels.qdepthwise(*conv_args(X, 1, 2**11, 2**11, 1, np.ones(1, np.int8), 2**11, 2**11, out))


@settings(max_examples=150, deadline=None)
@given(batch=sizes, h=sizes, w=sizes, c=sizes, kh=sizes, kw=sizes, threads=st.sampled_from([1, 2]))
def test_conv_entry_points_refuse_any_size_the_buffers_do_not_hold(batch, h, w, c, kh, kw, threads):
    out = np.zeros(4096, np.uint8)
    ok_input = fits(X.size, batch, h, w, c)
    for call, weights in (
        (_kernels.qdepthwise, np.zeros(64, np.int8)),
        (_kernels.qconv, kernels.pack_weights(np.zeros((2, 4), np.int8))),
        (None, None),
    ):
        try:
            if call is None:
                _kernels.maxpool(X, batch, h, w, c, kh, kw, 1, 1, 1, 1, 0, 0, 0, 0, out, 0, threads)
            else:
                call(*conv_args(X, batch, h, w, c, weights, kh, kw, out, threads))
        except REFUSED:
            continue
        assert ok_input, f"ran with batch={batch} h={h} w={w} c={c} on a {X.size}-byte input"


@settings(max_examples=150, deadline=None)
@given(m=sizes, lda=sizes, ldo=sizes, n=st.integers(1, 40), k=st.integers(1, 70))
def test_gemm_refuses_any_size_the_buffers_do_not_hold(m, lda, ldo, n, k):
    packed = kernels.pack_weights(np.ones((n, k), np.int8))
    a, out = np.zeros(512, np.uint8), np.zeros(512, np.uint8)
    try:
        _kernels.qgemm(a, m, lda, packed, BIAS, MULT, 0, 0, 255, ldo, out, 1, 0)
    except REFUSED:
        return
    assert m == 0 or (fits(a.size, (m - 1) * lda + k) and fits(out.size, (m - 1) * ldo + n))


@settings(max_examples=60, deadline=None)
@given(n=sizes, k=sizes)
def test_pack_weights_refuses_sizes_its_buffer_does_not_hold(n, k):
    w = np.ones(64, np.int8)
    try:
        packed = _kernels.pack_weights(w, n, k)
    except REFUSED:
        return
    assert fits(w.size, n, k) and (packed.n, packed.k) == (n, k)


def test_depth_beyond_the_int32_accumulator_limit_is_refused():
    with pytest.raises(InferenceError, match="int32 accumulators"):
        kernels.pack_weights(np.ones((1, 65537), np.int8))
    assert kernels.pack_weights(np.ones((1, 65536), np.int8)).k == 65536


def test_absurd_thread_counts_are_clamped_with_a_warning_and_still_exact():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 30), dtype=np.uint8)
    w = rng.integers(-128, 128, (20, 30), dtype=np.int8)
    stage = kernels.OutputStage(np.zeros(20, np.int32), None)
    expected = a.astype(np.int64) @ w.astype(np.int64).T
    with pytest.warns(RuntimeWarning, match="clamped"):
        got = kernels.gemm(a, kernels.pack_weights(w), stage, threads=1_000_000)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(InferenceError, match="threads"):
        kernels.gemm(a, kernels.pack_weights(w), stage, threads=0)
    with pytest.raises(InferenceError):
        kernels.gemm(a, kernels.pack_weights(w), stage, threads=2**40)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_multipliers_are_refused(bad):
    mult = np.full(4, 1e-3, np.float32)
    mult[2] = bad
    stage = kernels.OutputStage(np.zeros(4, np.int32), mult)
    with pytest.raises(InferenceError, match=r"multiplier\[2\] is not finite"):
        kernels.gemm(np.zeros((3, 8), np.uint8), kernels.pack_weights(np.ones((4, 8), np.int8)), stage)


def test_kernel_errors_reach_users_as_inference_errors():
    geom = kernels.ConvGeometry((3, 3))
    stage = kernels.OutputStage(np.zeros(1, np.int32), np.ones(1, np.float32))
    with pytest.raises(InferenceError, match="qconv.*larger than padded input"):
        kernels.conv_nhwc(
            np.zeros((1, 2, 2, 1), np.uint8), kernels.pack_weights(np.ones((1, 9), np.int8)), geom, 0, stage
        )
    with pytest.raises(InferenceError, match="maxpool"):
        kernels.maxpool_nhwc(np.zeros((1, 2, 2, 1), np.uint8), geom)


def test_peak_loops_refuse_bad_arguments():
    with pytest.raises(REFUSED):
        _kernels.peak(0, 10)  # the portable path has no peak loop
    for path in kernels.available_paths()[1:2]:
        with pytest.raises(REFUSED):
            _kernels.peak(kernels.resolve_path(path), 0)


def test_measured_peaks_are_plausible():
    """The asm peak loops run and count their operations: a few GOPS at least, below any real CPU's bound."""
    for path in kernels.available_paths():
        if path in ("avx2", "avx512vnni"):
            assert 1 < kernels.peak_gops(path, seconds=0.05) < 100_000
