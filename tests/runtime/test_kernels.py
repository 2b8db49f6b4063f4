"""C kernels against numpy references, on every instruction-set path this CPU offers,
over random shapes including M=1, N=1 and K not a multiple of 64 -- and bit-identical
across paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from runtime import _kernels, kernels
from runtime.errors import InferenceError

PATHS = kernels.available_paths()


@pytest.fixture(autouse=True, scope="module")
def split_every_call():
    """The tests' shapes are small: with a minimum of 1 every threaded call here really splits."""
    previous = kernels.min_work_per_thread(1, 1, 1)
    yield
    kernels.min_work_per_thread(*previous)
FAST = settings(max_examples=25, deadline=None)


def requant_reference(acc: np.ndarray, mult: np.ndarray, zy: int, lo: int, hi: int) -> np.ndarray:
    """DESIGN.md §3: clamp(rne(fp32(acc) * M) + z_y, lo, hi)."""
    f = acc.astype(np.float32) * mult
    return np.clip(np.rint(f) + zy, lo, hi).astype(np.int32)


def random_stage(rng, n: int, int32: bool, signed: bool = False) -> kernels.OutputStage:
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    if int32:
        return kernels.OutputStage(bias, None)
    mult = (rng.random(n) * 2e-3 + 1e-5).astype(np.float32)
    if signed:
        return kernels.OutputStage(
            bias, mult, int(rng.integers(-20, 20)), -128, int(rng.integers(0, 128)), np.int8
        )
    zy = int(rng.integers(0, 256))
    lo = int(rng.integers(0, zy + 1))
    return kernels.OutputStage(bias, mult, zy, lo, int(rng.integers(max(lo, 1), 256)), np.uint8)


def stage_reference(acc: np.ndarray, stage: kernels.OutputStage) -> np.ndarray:
    acc = acc + stage.bias
    if stage.multiplier is None:
        return acc.astype(np.int32)
    return requant_reference(acc, stage.multiplier, stage.zero_point, stage.lo, stage.hi).astype(stage.dtype)


@FAST
@given(
    m=st.integers(1, 130),
    n=st.integers(1, 90),
    k=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    int32=st.booleans(),
    signed=st.booleans(),
    threads=st.sampled_from([1, 2]),
)
def test_gemm_matches_reference_on_every_path(m, n, k, seed, int32, signed, threads):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    stage = random_stage(rng, n, int32, signed)
    expected = stage_reference(a.astype(np.int64) @ w.astype(np.int64).T, stage)
    packed = kernels.pack_weights(w)
    for path in PATHS:
        got = kernels.gemm(a, packed, stage, threads, path)
        np.testing.assert_array_equal(got, expected, err_msg=f"path {path}")


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 1000, 512), (7, 1, 65), (33, 17, 64), (96, 64, 576)])
def test_gemm_awkward_shapes_are_bit_identical_across_paths(m, n, k):
    rng = np.random.default_rng(m * n + k)
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    a[0, :] = 255  # the extreme that saturates vpmaddubsw's int16 sums
    w[:, :] = np.where(rng.random((n, k)) < 0.5, -128, 127).astype(np.int8)
    stage = random_stage(rng, n, int32=True)
    results = [kernels.gemm(a, kernels.pack_weights(w), stage, 1, p) for p in PATHS]
    expected = stage_reference(a.astype(np.int64) @ w.astype(np.int64).T, stage)
    for path, got in zip(PATHS, results, strict=True):
        np.testing.assert_array_equal(got, expected, err_msg=f"path {path}")


def conv_reference(x, w_okkc, geom: kernels.ConvGeometry, zx: int, stage) -> np.ndarray:
    """NHWC integer convolution in int64 numpy, padding with the zero point."""
    b, h, wd, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = geom.kernel, geom.strides, geom.dilations
    pt, pl, pb, pr = geom.pads
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = geom.output_hw(h, wd)
    acc = np.zeros((b, oh, ow, w_okkc.shape[0]), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[
                :, ky * dh : ky * dh + sh * (oh - 1) + 1 : sh, kx * dw : kx * dw + sw * (ow - 1) + 1 : sw, :
            ]
            acc += patch @ w_okkc[:, ky, kx, :].astype(np.int64).T
    return stage_reference(acc, stage)


geometries = st.builds(
    kernels.ConvGeometry,
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilations=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
)


@FAST
@given(
    geom=geometries,
    b=st.integers(1, 2),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
    c=st.integers(1, 20),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    int32=st.booleans(),
)
def test_conv_matches_reference_on_every_path(geom, b, h, w, c, n, seed, int32):
    assume(min(geom.output_hw(h, w)) >= 1)  # impossible windows are refused (test_kernels_refuse_...)
    rng = np.random.default_rng(seed)
    kh, kw = geom.kernel
    x = rng.integers(0, 256, (b, h, w, c), dtype=np.uint8)
    wt = rng.integers(-128, 128, (n, kh, kw, c), dtype=np.int8)
    zx = int(rng.integers(0, 256))
    stage = random_stage(rng, n, int32)
    # The GEMM path needs bias minus z_x * column sums; the reference subtracts z_x itself.
    colsum = wt.reshape(n, -1).astype(np.int64).sum(axis=1)
    gemm_stage = kernels.OutputStage(
        (stage.bias - zx * colsum).astype(np.int32),
        stage.multiplier,
        stage.zero_point,
        stage.lo,
        stage.hi,
        stage.dtype,
    )
    expected = conv_reference(x, wt, geom, zx, stage)
    packed = kernels.pack_weights(wt.reshape(n, -1))
    for path in PATHS:
        got = kernels.conv_nhwc(x, packed, geom, zx, gemm_stage, 2, path)
        np.testing.assert_array_equal(got, expected, err_msg=f"path {path}")


@FAST
@given(
    geom=geometries,
    b=st.integers(1, 2),
    h=st.integers(4, 12),
    w=st.integers(4, 12),
    c=st.integers(1, 70),
    seed=st.integers(0, 2**16),
    out=st.sampled_from(["uint8", "int8", "int32"]),
)
def test_depthwise_matches_reference_on_every_path(geom, b, h, w, c, seed, out):
    # uint8/int8 outputs take the SIMD paths' fused output stage, int32 the row-wise one.
    assume(min(geom.output_hw(h, w)) >= 1)
    rng = np.random.default_rng(seed)
    kh, kw = geom.kernel
    x = rng.integers(0, 256, (b, h, w, c), dtype=np.uint8)
    wt = rng.integers(-128, 128, (kh, kw, c), dtype=np.int8)
    zx = int(rng.integers(0, 256))
    stage = random_stage(rng, c, int32=out == "int32", signed=out == "int8")
    # Depthwise == one 1-channel conv per channel.
    expected = np.concatenate(
        [
            conv_reference(
                x[..., i : i + 1],
                wt[None, :, :, i : i + 1],
                geom,
                zx,
                kernels.OutputStage(
                    stage.bias[i : i + 1],
                    None if stage.multiplier is None else stage.multiplier[i : i + 1],
                    stage.zero_point,
                    stage.lo,
                    stage.hi,
                    stage.dtype,
                ),
            )
            for i in range(c)
        ],
        axis=3,
    )
    # One prepared weights object serves every path (each SIMD layout packed on its first call)
    # and every call after it; the raw array form prepares for that call only.
    prepared = kernels.pack_depthwise(wt)
    for _ in range(2):
        for path in PATHS:
            got = kernels.depthwise_nhwc(x, prepared, geom, zx, stage, 2, path)
            np.testing.assert_array_equal(got, expected, err_msg=f"path {path}")
    for path in PATHS:
        got = kernels.depthwise_nhwc(x, wt, geom, zx, stage, 1, path)
        np.testing.assert_array_equal(got, expected, err_msg=f"path {path} (raw weights)")


@pytest.mark.parametrize("kernel", [(5, 5), (6, 5)])
def test_depthwise_large_windows_match_reference_on_every_path(kernel):
    # 25 taps is the SIMD paths' fused kernel's limit; 30 take the row-wise output stage.
    rng = np.random.default_rng(kernel[0])
    geom = kernels.ConvGeometry(kernel, (1, 2), (1, 1), (2, 1, 2, 3))
    x = rng.integers(0, 256, (1, 9, 11, 37), dtype=np.uint8)
    wt = rng.integers(-128, 128, (*kernel, 37), dtype=np.int8)
    stage = random_stage(rng, 37, int32=False)
    expected = np.concatenate(
        [
            conv_reference(
                x[..., i : i + 1],
                wt[None, :, :, i : i + 1],
                geom,
                9,
                kernels.OutputStage(stage.bias[i : i + 1], stage.multiplier[i : i + 1], stage.zero_point,
                                    stage.lo, stage.hi),
            )
            for i in range(37)
        ],
        axis=3,
    )
    prepared = kernels.pack_depthwise(wt)
    for path in PATHS:
        np.testing.assert_array_equal(kernels.depthwise_nhwc(x, wt, geom, 9, stage, 1, path), expected, path)
        np.testing.assert_array_equal(kernels.depthwise_nhwc(x, prepared, geom, 9, stage, 1, path), expected, path)


@pytest.mark.parametrize(
    ("kernel", "strides", "dilations", "c", "signed"),
    [
        ((8, 4), (1, 1), (1, 1), 33, False),
        ((5, 3), (2, 1), (2, 1), 64, True),
        ((7, 1), (1, 2), (1, 2), 95, False),
        ((3, 3), (2, 2), (1, 1), 96, True),
    ],
)
def test_depthwise_tall_windows_match_reference_on_every_path(kernel, strides, dilations, c, signed):
    # The AVX-512 VNNI row kernel takes windows of up to 8 rows of up to 4 taps (one vpdpbusd per
    # window row) and caches one rearranged input row per window row: tall windows, strides and
    # dilations that skip rows, channel counts around its 32-channel step, a clamp that bites.
    rng = np.random.default_rng(c)
    geom = kernels.ConvGeometry(kernel, strides, dilations, (3, 1, 2, 2))
    x = rng.integers(0, 256, (2, 13, 10, c), dtype=np.uint8)
    wt = rng.integers(-128, 128, (*kernel, c), dtype=np.int8)
    mult = (rng.random(c) * 2e-3 + 1e-5).astype(np.float32)
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    stage = (kernels.OutputStage(bias, mult, -3, -100, 110, np.int8) if signed
             else kernels.OutputStage(bias, mult, 128, 10, 240, np.uint8))
    expected = np.concatenate(
        [
            conv_reference(
                x[..., i : i + 1],
                wt[None, :, :, i : i + 1],
                geom,
                5,
                kernels.OutputStage(stage.bias[i : i + 1], stage.multiplier[i : i + 1], stage.zero_point,
                                    stage.lo, stage.hi, stage.dtype),
            )
            for i in range(c)
        ],
        axis=3,
    )
    assert len(np.unique(expected)) > 20  # not all clamped
    prepared = kernels.pack_depthwise(wt)
    for path in PATHS:
        for threads in (1, 3):
            got = kernels.depthwise_nhwc(x, prepared, geom, 5, stage, threads, path)
            np.testing.assert_array_equal(got, expected, f"{path} threads={threads}")


def test_prepared_depthwise_weights_must_match_the_window():
    prepared = kernels.pack_depthwise(np.ones((3, 3, 8), np.int8))
    assert prepared.shape == (3, 3, 8)
    stage = kernels.OutputStage(np.zeros(8, np.int32), np.full(8, 1e-2, np.float32), 0, 0, 255)
    x = np.zeros((1, 6, 6, 8), np.uint8)
    with pytest.raises(InferenceError, match="do not match"):
        kernels.depthwise_nhwc(x, prepared, kernels.ConvGeometry((5, 5)), 0, stage)
    with pytest.raises(InferenceError, match="window differs"):  # the C check, whoever calls it
        kernels.call(_kernels.qdepthwise, x, 1, 6, 6, 8, prepared, 5, 5, 1, 1, 1, 1, 0, 0, 0, 0, 0, stage.bias,
                     stage.multiplier, 0, 0, 255, np.zeros(64, np.uint8), 1, 0)
    with pytest.raises(InferenceError, match="int8"):
        kernels.pack_depthwise(np.ones((3, 3, 8), np.uint8))


@FAST
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16), scalar_b=st.booleans())
def test_qadd_paths_agree_and_stay_within_one_step_of_reference(n, seed, scalar_b):
    rng = np.random.default_rng(seed)
    # int8 operands: every path equals the portable one (unit-stride and broadcast loops)
    sa8, sb8 = rng.integers(-128, 128, n, dtype=np.int8), rng.integers(-128, 128, 1 if scalar_b else n, dtype=np.int8)
    p8 = kernels.AddParams.from_scales(0.03, -5, 0.05, 7, 0.06, 3, -100, 127)
    for path in PATHS[1:]:
        np.testing.assert_array_equal(kernels.qadd(sa8, sb8, p8, path), kernels.qadd(sa8, sb8, p8, "portable"))
    a = rng.integers(0, 256, n, dtype=np.uint8)
    b = rng.integers(0, 256, 1 if scalar_b else n, dtype=np.uint8)
    sa, sb, sy = (float(v) for v in rng.random(3) * 0.1 + 0.001)
    za, zb, zy = (int(v) for v in rng.integers(0, 256, 3))
    params = kernels.AddParams.from_scales(sa, za, sb, zb, sy, zy, 0, 255)
    outs = [kernels.qadd(a, b, params, p) for p in ("portable", PATHS[-1])]
    np.testing.assert_array_equal(outs[0], outs[1])
    ref = np.clip(
        np.rint(
            ((a.astype(np.float32) - za) * np.float32(sa) + (b.astype(np.float32) - zb) * np.float32(sb))
            / np.float32(sy)
        )
        + zy,
        0,
        255,
    )
    assert np.abs(outs[0].astype(int) - ref).max() <= 1


def test_kernels_refuse_buffers_that_do_not_match():
    from runtime import _kernels

    packed = kernels.pack_weights(np.ones((4, 8), np.int8))
    bias, mult = np.zeros(4, np.int32), np.ones(4, np.float32)
    small = np.zeros(8 * 3 - 1, np.uint8)
    out = np.zeros((3, 4), np.uint8)
    with pytest.raises(ValueError, match="a holds"):
        _kernels.qgemm(small, 3, 8, packed, bias, mult, 0, 0, 255, 4, out, 1, 0)
    with pytest.raises(ValueError, match="output holds"):
        _kernels.qgemm(np.zeros(24, np.uint8), 3, 8, packed, bias, mult, 0, 0, 255, 4, out[:2], 1, 0)
    with pytest.raises(ValueError, match="bias holds"):
        _kernels.qgemm(np.zeros(24, np.uint8), 3, 8, packed, bias[:3], mult, 0, 0, 255, 4, out, 1, 0)
    with pytest.raises(ValueError, match="out of range"):
        _kernels.qgemm(np.zeros(24, np.uint8), -3, 8, packed, bias, mult, 0, 0, 255, 4, out, 1, 0)
    with pytest.raises(ValueError, match="larger than padded input"):
        _kernels.qconv(
            np.zeros(4, np.uint8),
            1,
            2,
            2,
            1,
            kernels.pack_weights(np.ones((1, 9), np.int8)),
            3,
            3,
            1,
            1,
            1,
            1,
            0,
            0,
            0,
            0,
            0,
            bias[:1],
            mult[:1],
            0,
            0,
            255,
            np.zeros(4, np.uint8),
            1,
            0,
        )
    with pytest.raises(ValueError, match="not available"):
        _kernels.qgemm(np.zeros(24, np.uint8), 3, 8, packed, bias, mult, 0, 0, 255, 4, out, 1, 99)
    with pytest.raises(InferenceError, match="not available"):
        kernels.resolve_path("sse9")


def test_isa_environment_variable_forces_a_path(monkeypatch):
    monkeypatch.setenv(kernels.ISA_ENV, "portable")
    assert kernels.resolve_path() == 0
    monkeypatch.setenv(kernels.ISA_ENV, "no-such-isa")
    with pytest.raises(InferenceError):
        kernels.resolve_path()


def test_work_threshold_keeps_small_calls_on_one_thread_and_results_identical():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (49, 160), dtype=np.uint8)
    packed = kernels.pack_weights(rng.integers(-128, 128, (96, 160), dtype=np.int8))
    stage = random_stage(rng, 96, int32=False)
    x = rng.integers(0, 256, (1, 14, 14, 40), dtype=np.uint8)
    wd = kernels.pack_depthwise(rng.integers(-128, 128, (3, 3, 40), dtype=np.int8))
    dstage = random_stage(rng, 40, int32=False)
    geom = kernels.ConvGeometry((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    split = kernels.min_work_per_thread()
    assert split == (1, 1, 1)  # the module's fixture
    try:
        for minimum in (1, 10**12):  # every call split / none split
            kernels.min_work_per_thread(minimum, minimum, minimum)
            for path in PATHS:
                np.testing.assert_array_equal(
                    kernels.gemm(a, packed, stage, 2, path), kernels.gemm(a, packed, stage, 1, path)
                )
                np.testing.assert_array_equal(
                    kernels.depthwise_nhwc(x, wd, geom, 3, dstage, 2, path),
                    kernels.depthwise_nhwc(x, wd, geom, 3, dstage, 1, path),
                )
                np.testing.assert_array_equal(kernels.maxpool_nhwc(x, geom, 2), kernels.maxpool_nhwc(x, geom, 1))
        with pytest.raises(InferenceError, match="must be >= 1"):
            kernels.min_work_per_thread(0)
    finally:
        kernels.min_work_per_thread(*split)


@FAST
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(0, 200),
    signed=st.booleans(),
    scale=st.sampled_from([1e-40, 1e-3, 0.0173, 0.5, 1.0, 7.0, 1e3]),
)
def test_quantize_f32_equals_the_numpy_quantize_on_every_path(seed, n, signed, scale):
    # The model input's QuantizeLinear in C: numpy's arithmetic bit for bit, ties (x / s exactly
    # k + 0.5), NaN (-> 0), infinities and values far outside the range included.
    from runtime.qmath import quantize

    rng = np.random.default_rng(seed)
    dtype = np.int8 if signed else np.uint8
    info = np.iinfo(dtype)
    z = int(rng.integers(info.min, info.max + 1))
    s = np.float32(scale)
    x = (rng.standard_normal(n) * 200 * s).astype(np.float32)
    ties = (rng.integers(-300, 300, n) + 0.5).astype(np.float32) * s
    x = np.where(rng.random(n) < 0.3, ties, x).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0], np.float32)
    x[: min(n, special.size)] = special[: min(n, special.size)]
    with np.errstate(all="ignore"):
        expected = quantize(x, np.array(s), np.array(z, dtype), 1, dtype)
    for path in PATHS:
        np.testing.assert_array_equal(kernels.quantize_f32(x, s, z, dtype, path), expected, path)
