"""numpy face of the C integer kernels (runtime._kernels).

Checks dtypes and makes arrays contiguous so the C side only sees the layouts it validates,
and resolves the instruction-set path: the fastest one this CPU offers, unless the
``COMPRESS_RUNTIME_ISA`` environment variable (or a ``path=`` argument) forces another, which
is how tests compare the portable, AVX2, AVX-512 VNNI and AMX paths bit for bit.

The C entry points validate every size themselves (overflow-checked, with explicit limits) and
raise ValueError/OverflowError/MemoryError; ``call`` turns those into the runtime's
InferenceError naming the kernel, so a bad size never escapes as an anonymous exception.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from runtime import _kernels
from runtime.errors import InferenceError

PackedWeights = _kernels.PackedWeights
DepthwiseWeights = _kernels.DepthwiseWeights
ISA_ENV = "COMPRESS_RUNTIME_ISA"


def call(kernel: Callable[..., object], *args: object) -> object:
    """kernel(*args), with the extension's argument errors as InferenceError."""
    try:
        return kernel(*args)
    except (ValueError, OverflowError, TypeError) as exc:
        raise InferenceError(f"kernel {kernel.__name__}: {exc}") from exc
    except MemoryError as exc:
        raise InferenceError(f"kernel {kernel.__name__}: out of memory") from exc


@cache
def _path_ids() -> dict[str, int]:
    """name -> id of the paths usable here, slowest first (asked once: the CPU does not change)."""
    return {name: int(getattr(_kernels, name)) for name in _kernels.paths()}


def available_paths() -> list[str]:
    """Instruction-set paths usable on this machine, slowest first ('portable' always)."""
    return list(_path_ids())


def path_name(path: str | None = None) -> str:
    """The path the kernels use: ``path``, else $COMPRESS_RUNTIME_ISA, else the fastest available."""
    ids = _path_ids()
    name = path or os.environ.get(ISA_ENV) or next(reversed(ids))
    if name not in ids:
        raise InferenceError(f"instruction-set path {name!r} is not available here; choose from {list(ids)}")
    return name


def resolve_path(path: str | None = None) -> int:
    """Path id of :func:`path_name`."""
    return _path_ids()[path_name(path)]


@dataclass(frozen=True)
class OutputStage:
    """Requantization after the int32 accumulation (DESIGN.md §3).

    ``bias`` already holds ``bias_int32 - z_x * column_sums(W)``.  With ``multiplier`` None
    the kernels return int32 accumulators; otherwise
    ``y = clamp(round_half_even((acc + bias) * multiplier) + zero_point, lo, hi)`` as
    ``dtype`` (uint8 or int8; lo/hi must lie in its range).
    """

    bias: np.ndarray
    multiplier: np.ndarray | None
    zero_point: int = 0
    lo: int = 0
    hi: int = 255
    dtype: type = np.uint8
    _args: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The C arguments are made once: a stage is built at load and used on every run.
        bias = np.ascontiguousarray(self.bias, np.int32)
        mult = None if self.multiplier is None else np.ascontiguousarray(self.multiplier, np.float32)
        object.__setattr__(self, "_args", (bias, mult, int(self.zero_point), int(self.lo), int(self.hi)))

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.empty(shape, np.int32 if self.multiplier is None else self.dtype)

    def args(self) -> tuple:
        return self._args


def pack_weights(w: np.ndarray) -> PackedWeights:
    """Packs int8 weights given as (N, K), one row per output column, once at load."""
    if w.dtype != np.int8 or w.ndim != 2:
        raise InferenceError(f"pack_weights expects a 2-D int8 array, got {w.dtype} {w.shape}")
    n, k = w.shape
    return call(_kernels.pack_weights, np.ascontiguousarray(w), n, k)


def min_work_per_thread(
    gemm: int | None = None, depthwise: int | None = None, maxpool: int | None = None
) -> tuple[int, int, int]:
    """The work a thread must get before a kernel call splits across threads (GEMM MACs,
    depthwise window MACs, maxpool window comparisons): sets those given (>= 1) and returns the
    previous three.  Below it a call runs on fewer threads, at least one, whatever ``threads``
    asks: a few microseconds of work do not pay a worker's wake-up.  Set between calls only."""
    args = [-1 if v is None else int(v) for v in (gemm, depthwise, maxpool)]
    return call(_kernels.min_work_per_thread, *args)


def pack_depthwise(w: np.ndarray) -> DepthwiseWeights:
    """Depthwise weights int8 (kh, kw, C) prepared once (channel sums, each SIMD path's
    tap-pair layout on its first call) instead of on every call."""
    if w.dtype != np.int8 or w.ndim != 3:
        raise InferenceError(f"depthwise weights must be int8 (kh, kw, C), got {w.dtype} {w.shape}")
    kh, kw, c = w.shape
    return call(_kernels.pack_depthwise, np.ascontiguousarray(w), kh, kw, c)


def _u8(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise InferenceError(f"{what} must be uint8, got {x.dtype}")
    return np.ascontiguousarray(x)


def gemm(
    a: np.ndarray, packed: PackedWeights, stage: OutputStage, threads: int = 1, path: str | None = None
) -> np.ndarray:
    """(M, K) uint8 times the packed (K, N) int8 weights through ``stage``: (M, N)."""
    a = _u8(a, "gemm input")
    if a.ndim != 2 or a.shape[1] != packed.k:
        raise InferenceError(f"gemm input {a.shape} does not match packed weights K={packed.k}")
    out = stage.empty((a.shape[0], packed.n))
    call(_kernels.qgemm, a, a.shape[0], packed.k, packed, *stage.args(), packed.n, out, threads, resolve_path(path))
    return out


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, strides, dilations and pads (top, left, bottom, right) of a 2-D conv."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def args(self) -> tuple[int, ...]:
        return (*self.kernel, *self.strides, *self.dilations, *self.pads)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        pt, pl, pb, pr = self.pads
        return (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1


def conv_nhwc(
    x: np.ndarray,
    packed: PackedWeights,
    geom: ConvGeometry,
    x_zero_point: int,
    stage: OutputStage,
    threads: int = 1,
    path: str | None = None,
) -> np.ndarray:
    """NHWC uint8 convolution with weights packed from (Cout, kh*kw*Cin) in (ky, kx, cin) order."""
    x = _u8(x, "conv input")
    if x.ndim != 4:
        raise InferenceError(f"conv input must be NHWC, got shape {x.shape}")
    b, h, w, c = x.shape
    oh, ow = geom.output_hw(h, w)
    out = stage.empty((b, max(oh, 0), max(ow, 0), packed.n))
    bias, mult, zy, lo, hi = stage.args()
    call(
        _kernels.qconv,
        x,
        b,
        h,
        w,
        c,
        packed,
        *geom.args(),
        int(x_zero_point),
        bias,
        mult,
        zy,
        lo,
        hi,
        out,
        threads,
        resolve_path(path),
    )
    return out


def depthwise_nhwc(
    x: np.ndarray,
    weights: np.ndarray | DepthwiseWeights,
    geom: ConvGeometry,
    x_zero_point: int,
    stage: OutputStage,
    threads: int = 1,
    path: str | None = None,
) -> np.ndarray:
    """NHWC uint8 depthwise convolution, weights int8 (kh, kw, C) or pack_depthwise of them
    (prepared once: the runtime's form); bias without z_x correction."""
    x = _u8(x, "depthwise input")
    if isinstance(weights, np.ndarray):
        if weights.dtype != np.int8:
            raise InferenceError(f"depthwise weights must be int8, got {weights.dtype}")
        weights = np.ascontiguousarray(weights)
    if x.ndim != 4 or weights.shape != (*geom.kernel, x.shape[3]):
        raise InferenceError(f"depthwise input {x.shape} / weights {weights.shape} do not match")
    b, h, w, c = x.shape
    oh, ow = geom.output_hw(h, w)
    out = stage.empty((b, max(oh, 0), max(ow, 0), c))
    bias, mult, zy, lo, hi = stage.args()
    call(
        _kernels.qdepthwise,
        x,
        b,
        h,
        w,
        c,
        weights,
        *geom.args(),
        int(x_zero_point),
        bias,
        mult,
        zy,
        lo,
        hi,
        out,
        threads,
        resolve_path(path),
    )
    return out


@dataclass(frozen=True)
class AddParams:
    """fp32 parameters of the quantized add (runtime/csrc/qadd.c), derived as ORT does."""

    ratio_a: np.float32
    ratio_b: np.float32
    offset: np.float32
    lo: int
    hi: int

    @staticmethod
    def from_scales(
        sa: float, za: int, sb: float, zb: int, sy: float, zy: int, lo: int, hi: int
    ) -> AddParams:
        ra, rb = np.float32(sa) / np.float32(sy), np.float32(sb) / np.float32(sy)
        # MLAS builds this with one fused multiply-add: fma(ra, za, rb * zb), emulated in
        # float64 (the product of two fp32 values is exact there).
        fused = np.float32(np.float64(ra) * np.float64(za) + np.float64(np.float32(rb * np.float32(zb))))
        return AddParams(ra, rb, np.float32(np.float32(zy) - fused), lo, hi)


def qadd(a: np.ndarray, b: np.ndarray, params: AddParams, path: str | None = None) -> np.ndarray:
    """Quantized a + b (same dtype, uint8 or int8; equal shapes or one scalar, else broadcast)."""
    if a.dtype != b.dtype or a.dtype not in (np.uint8, np.int8):
        raise InferenceError(f"qadd operands must share a uint8/int8 dtype, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape and a.size != 1 and b.size != 1:
        a, b = np.broadcast_arrays(a, b)
    shape = a.shape if a.size >= b.size else b.shape
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty(shape, a.dtype)
    p = params
    call(
        _kernels.qadd,
        a,
        b,
        out,
        out.size,
        float(p.ratio_a),
        float(p.ratio_b),
        float(p.offset),
        p.lo,
        p.hi,
        int(a.dtype == np.int8),
        resolve_path(path),
    )
    return out


def quantize_f32(x: np.ndarray, scale: float, zero_point: int, dtype, path: str | None = None) -> np.ndarray:
    """QuantizeLinear of float32 ``x`` with one scale into uint8/int8, in one C pass with
    ``runtime.qmath.quantize``'s arithmetic (fp32 ``x / scale``, round half to even, ``+ zero_point``,
    saturate; NaN gives 0 as numpy's cast does): numpy's six passes cost more than the stem conv."""
    dtype = np.dtype(dtype)
    if x.dtype != np.float32 or dtype not in (np.uint8, np.int8):
        raise InferenceError(f"quantize_f32 maps float32 to uint8/int8, got {x.dtype} to {dtype}")
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype)
    info = np.iinfo(dtype)
    call(_kernels.quantize_f32, x, out, out.size, float(np.float32(scale)), int(zero_point), int(info.min),
         int(info.max), int(dtype == np.int8), resolve_path(path))
    return out


def maxpool_nhwc(x: np.ndarray, geom: ConvGeometry, threads: int = 1) -> np.ndarray:
    """NHWC uint8/int8 max pooling (padding never wins, as with ONNX's -inf padding)."""
    if x.dtype not in (np.uint8, np.int8) or x.ndim != 4:
        raise InferenceError(f"maxpool_nhwc expects a 4-D uint8/int8 array, got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    b, h, w, c = x.shape
    oh, ow = geom.output_hw(h, w)
    out = np.empty((b, max(oh, 0), max(ow, 0), c), x.dtype)
    call(_kernels.maxpool, x, b, h, w, c, *geom.args(), out, int(x.dtype == np.int8), threads)
    return out


def peak_gops(path: str, seconds: float = 0.3) -> float:
    """Measured peak of a path's multiply-accumulate instructions (GOPS, one thread).

    Runs the extension's register-only loop in the path's micro-kernel mix and divides by this
    thread's CPU time, so time slices lost to other processes on a shared machine do not count;
    the best of three rounds."""
    pid = resolve_path(path)
    iterations = 1 << 16
    while iterations < 1 << 40:  # calibrate: one round should last about seconds / 3
        start = time.thread_time()
        call(_kernels.peak, pid, iterations)
        if time.thread_time() - start >= seconds / 3:
            break
        iterations *= 2
    best = 0.0
    for _ in range(3):
        start = time.thread_time()
        ops = _kernels.peak(pid, iterations)
        best = max(best, ops / max(time.thread_time() - start, 1e-9) / 1e9)
    return best
