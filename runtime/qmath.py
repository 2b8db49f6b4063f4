"""The numeric contract of DESIGN.md §3 in numpy: affine (de)quantization and the pieces
the integer kernels derive from it (multipliers, fused clamp bounds, weight zero points)."""

from __future__ import annotations

import numpy as np

from runtime.errors import InferenceError

QRANGE = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int16): (-32768, 32767),
    np.dtype(np.int32): (-(2**31), 2**31 - 1),
}


def _broadcast(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Per-axis parameter shaped to broadcast against an ndim tensor along axis."""
    param = np.asarray(param)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = param.size
    return param.reshape(shape)


def quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None,
    axis: int = 1,
    dtype: np.dtype | None = None,
) -> np.ndarray:
    """q = saturate(round_half_to_even(x / s) + z), dividing by the scale as ONNX does."""
    dtype = np.dtype(dtype or (zero_point.dtype if zero_point is not None else np.uint8))
    lo, hi = QRANGE[dtype]
    s = _broadcast(scale, x.ndim, axis).astype(np.float32)
    z = 0 if zero_point is None else _broadcast(zero_point, x.ndim, axis).astype(np.float32)
    q = np.rint(x.astype(np.float32) / s) + z
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1) -> np.ndarray:
    """x = (q - z) * s in fp32."""
    s = _broadcast(scale, q.ndim, axis).astype(np.float32)
    z = 0 if zero_point is None else _broadcast(zero_point, q.ndim, axis).astype(np.int32)
    return ((q.astype(np.int32) - z).astype(np.float32) * s).astype(np.float32)


def requant_multiplier(x_scale: np.ndarray, w_scale: np.ndarray, y_scale: np.ndarray, n: int) -> np.ndarray:
    """M[c] = fp32(fp32(s_x * s_w[c]) / s_y), evaluated in fp32 in that order (as ORT does)."""
    xs = np.float32(np.asarray(x_scale).reshape(()))
    ws = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (n,))
    ys = np.float32(np.asarray(y_scale).reshape(()))
    return ((xs * ws).astype(np.float32) / ys).astype(np.float32)


def clamp_bounds(
    y_scale: np.ndarray, y_zero_point: np.ndarray, fused_min: float | None, fused_max: float | None
) -> tuple[int, int]:
    """Saturation bounds of the output type, narrowed by a fused Relu/Clip.

    Quantization is monotone, so Q(clip(v, a, b)) == clamp(Q(v), Q(a), Q(b)): the fused
    activation becomes exact integer bounds."""
    dtype = np.asarray(y_zero_point).dtype
    lo, hi = QRANGE[dtype]
    s, z = np.asarray(y_scale).reshape(()), np.asarray(y_zero_point).reshape(())
    if fused_min is not None:
        lo = max(lo, int(quantize(np.float32(fused_min).reshape(1), s, z.reshape(1))[0]))
    if fused_max is not None:
        hi = min(hi, int(quantize(np.float32(fused_max).reshape(1), s, z.reshape(1))[0]))
    return lo, max(lo, hi)


def centered_weights(w: np.ndarray, w_zero_point: np.ndarray, axis: int, where: str) -> np.ndarray:
    """w - z_w as int8, the operand the u8 x s8 kernels take.

    Symmetric int8 weights (z_w = 0, our exporter's and ORT's default) pass through; a uint8
    weight with z_w = 128 also fits.  Anything else cannot be an s8 operand and is refused
    with the node named, instead of silently wrapping."""
    zp = _broadcast(np.asarray(w_zero_point if w_zero_point is not None else 0), w.ndim, axis)
    centered = w.astype(np.int32) - zp.astype(np.int32)
    if centered.min(initial=0) < -128 or centered.max(initial=0) > 127:
        raise InferenceError(
            f"{where}: weights minus their zero point leave the int8 range; "
            "the integer kernels need int8 weights (symmetric, or uint8 with zero point 128)"
        )
    return centered.astype(np.int8)


def as_uint8_activation(x: np.ndarray, zero_point: int) -> tuple[np.ndarray, int]:
    """int8 activations become uint8 by flipping the sign bit (x + 128), zero point + 128."""
    if x.dtype == np.uint8:
        return x, zero_point
    if x.dtype == np.int8:
        return x.view(np.uint8) ^ np.uint8(0x80), zero_point + 128
    raise InferenceError(f"quantized activation must be uint8 or int8, got {x.dtype}")
