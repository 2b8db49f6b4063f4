"""Weight-only quantization, group-wise: int4/int8 codes along the input dimension.

LLM-style compression: the weights of every Linear (and HuggingFace ``Conv1D``) become
``bits``-bit codes in groups of ``group_size`` consecutive input features, each group with
its own fp32 scale and integer zero point; activations stay float.  The weights are chosen
by round-to-nearest (RTN), GPTQ (error compensation with the inverse Hessian of the
layer's calibration inputs) or AWQ (activation-aware per-input-channel scaling searched on
calibration data).  :class:`WeightOnlyLinear` computes exactly what the exported
MatMulNBits node computes: ``w = (q - z) · s`` in fp32, then a float product.

Codes are unsigned (0 .. 2^bits - 1): symmetric groups use the fixed zero point
2^(bits-1) and ``scale = max|w| / (2^(bits-1) - 1)``, asymmetric groups
``scale = (max - min) / (2^bits - 1)`` over a range widened to include 0 (DESIGN.md §3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from quant.calibrate import split_batch
from quant.errors import QuantError
from quant.spec import QuantSpec, qparams

WEIGHT_ONLY_BITS = (4, 8)
METHODS = ("rtn", "gptq", "awq")
MIN_GROUP = 16  # MatMulNBits' smallest block


@dataclass(frozen=True)
class GroupSpec:
    """Bits, group size and symmetry of a weight-only quantized matrix."""

    bits: int = 4
    group_size: int = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.bits not in WEIGHT_ONLY_BITS:
            raise QuantError(f"weight-only bits must be one of {WEIGHT_ONLY_BITS}, got {self.bits}")
        g = self.group_size
        if not isinstance(g, int) or g < MIN_GROUP or g & (g - 1):
            raise QuantError(f"group_size must be a power of two >= {MIN_GROUP} (e.g. 32, 64, 128), got {g}")

    @property
    def code_spec(self) -> QuantSpec:
        return QuantSpec(bits=self.bits, signed=False, symmetric=self.symmetric)

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1


def is_linear_like(module: nn.Module) -> bool:
    """nn.Linear, or HuggingFace's Conv1D (GPT-2: ``x @ W + b`` with W stored (in, out))."""
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf"))


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight of a Linear-like module, as nn.Linear stores it."""
    w = module.weight.detach()
    return w if isinstance(module, nn.Linear) else w.t()


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    """(N, K) -> (N, ceil(K/group), group), zero-padded at the end of K."""
    n, k = w.shape
    pad = (-k) % group
    if pad:
        w = F.pad(w, (0, pad))
    return w.reshape(n, -1, group)


def group_qparams(w: torch.Tensor, spec: GroupSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales (N, n_groups) fp32 and zero points (N, n_groups) int32 of a (N, K) weight."""
    g = _grouped(w.float(), spec.group_size)
    return qparams(g.amin(-1), g.amax(-1), spec.code_spec)


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: GroupSpec) -> torch.Tensor:
    """Codes (N, n_groups·group) uint8: saturate(round_half_even(w / s) + z)."""
    g = _grouped(w.float(), spec.group_size)
    q = torch.round(g / scale[..., None]) + zero[..., None].float()
    return q.clamp_(0, spec.qmax).to(torch.uint8).reshape(w.shape[0], -1)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, k: int) -> torch.Tensor:
    """(q - z)·s in fp32, cut back to K columns: the weight the kernel multiplies with."""
    n, groups = scale.shape
    q = codes.reshape(n, groups, -1).float()
    return ((q - zero[..., None].float()) * scale[..., None]).reshape(n, -1)[:, :k]


def fake_quantize_groups(w: torch.Tensor, spec: GroupSpec) -> torch.Tensor:
    """Round-to-nearest quantize-dequantize of a (N, K) weight (used by the searches)."""
    scale, zero = group_qparams(w, spec)
    return dequantize_codes(quantize_codes(w, scale, zero, spec), scale, zero, w.shape[1])


class WeightOnlyLinear(nn.Module):
    """y = (x · in_scale) @ dequant(codes)^T + bias: what MatMulNBits (after an optional Mul) computes.

    ``in_scale`` (per input feature, fp32) is AWQ's inverse scaling, kept as an explicit
    multiply so the codes can hold the scaled weight; it is None for RTN and GPTQ."""

    def __init__(
        self,
        codes: torch.Tensor,
        scale: torch.Tensor,
        zero: torch.Tensor,
        in_features: int,
        spec: GroupSpec,
        bias: torch.Tensor | None = None,
        in_scale: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.spec = in_features, scale.shape[0], spec
        self.register_buffer("codes", codes.to(torch.uint8))
        self.register_buffer("scale", scale.to(torch.float32))
        self.register_buffer("zero", zero.to(torch.uint8))
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("in_scale", None if in_scale is None else in_scale.detach().float().clone())

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_codes(self.codes, self.scale, self.zero, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_scale is not None:
            x = x * self.in_scale.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        s = self.spec
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={s.bits}, "
                f"group_size={s.group_size}, symmetric={s.symmetric}, awq={self.in_scale is not None}")


# ---- calibration statistics of Linear inputs ---------------------------------------------


@dataclass
class InputStats:
    """What the searches need from a layer's calibration inputs (rows = tokens)."""

    hessian: torch.Tensor | None = None  # Σ x xᵀ (float64), for GPTQ
    abs_sum: torch.Tensor | None = None  # Σ |x| per input feature, for AWQ
    abs_max: torch.Tensor | None = None  # max |x| per input feature, for SmoothQuant
    sample: torch.Tensor | None = None  # up to ``max_rows`` input rows, for AWQ's loss
    rows: int = 0


def run_batches(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> int:
    """Runs the loader through ``model`` under no_grad; returns the number of batches."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    count = 0
    with torch.no_grad():
        for batch in loader:
            if max_batches is not None and count >= max_batches:
                break
            args, kwargs = split_batch(batch)
            model(*[a.to(device) if isinstance(a, torch.Tensor) else a for a in args],
                  **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
            count += 1
    if count == 0:
        raise QuantError("the calibration loader is empty: it yielded no batch")
    return count


def collect_input_stats(
    model: nn.Module,
    names: list[str],
    loader: Iterable,
    *,
    hessian: bool = False,
    abs_stats: bool = False,
    max_rows: int = 0,
    max_batches: int | None = None,
) -> dict[str, InputStats]:
    """Streams the loader once with forward pre-hooks on the named modules.

    O(K²) memory per layer for the Hessian, O(K) for the absolute statistics; NaN or inf
    in a layer's input is an error naming that layer."""
    modules = dict(model.named_modules())
    stats = {name: InputStats() for name in names}

    def hook_for(name: str):
        st = stats[name]

        def hook(_module, inputs):
            x = inputs[0].detach()
            x = x.reshape(-1, x.shape[-1]).float()
            if not torch.isfinite(x).all():
                raise QuantError(f"calibration input of '{name}' holds NaN or inf")
            st.rows += x.shape[0]
            if hessian:
                xd = x.double()
                h = xd.t() @ xd
                st.hessian = h if st.hessian is None else st.hessian + h
            if abs_stats:
                a = x.abs()
                st.abs_sum = a.sum(0) if st.abs_sum is None else st.abs_sum + a.sum(0)
                m = a.amax(0)
                st.abs_max = m if st.abs_max is None else torch.maximum(st.abs_max, m)
            if max_rows:
                keep = x if st.sample is None else torch.cat([st.sample, x])
                st.sample = keep[:max_rows].clone()

        return hook

    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_pre_hook(hook_for(name)))
        run_batches(model, loader, max_batches)
    finally:
        for h in handles:
            h.remove()
    for name, st in stats.items():
        if st.rows == 0:
            raise QuantError(f"'{name}' saw no calibration input: the loader's batches never reach it")
    return stats


# ---- the three ways of choosing the codes ---------------------------------------------------


def rtn(
    w: torch.Tensor, spec: GroupSpec, clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, scale, zero) by round-to-nearest; ``clip`` (N, n_groups) shrinks each group's
    range by that ratio first (values outside saturate)."""
    if clip is None:
        scale, zero = group_qparams(w, spec)
    else:
        g = _grouped(w.float(), spec.group_size)
        scale, zero = qparams(g.amin(-1) * clip, g.amax(-1) * clip, spec.code_spec)
    return quantize_codes(w, scale, zero, spec), scale, zero


def gptq(
    w: torch.Tensor, h: torch.Tensor, spec: GroupSpec, damp: float = 0.01, block: int = 128,
    act_order: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ (Frantar et al. 2022): quantize column by column, pushing each column's error onto
    the columns not yet quantized through the Cholesky factor of the inverse Hessian.

    With ``act_order`` columns go in order of decreasing Hessian diagonal (the inputs with
    the most energy first) and the group scales are fixed up front from the original weights
    ("static groups"), so groups stay contiguous in the file (no g_idx); without it a group's
    scale is chosen when its first column is reached, from the weights as updated so far."""
    n, k = w.shape
    g = spec.group_size
    block = max(g, block // g * g)
    w = w.clone().double()
    h = h.clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(k, dtype=h.dtype) * damp * torch.diag(h).mean()
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k)
    fixed = group_qparams(w.float(), spec) if act_order else None
    w, h = w[:, perm], h[perm][:, perm]
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    n_groups = (k + g - 1) // g
    scale = torch.zeros(n, n_groups) if fixed is None else fixed[0]
    zero = torch.zeros(n, n_groups, dtype=torch.int32) if fixed is None else fixed[1]
    q_all = torch.zeros_like(w)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros(n, i2 - i1, dtype=w.dtype), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col, grp = w1[:, i], int(perm[i1 + i]) // g
            if fixed is None and (i1 + i) % g == 0:  # block is a multiple of g: the group lies in w1
                s, z = qparams(w1[:, i : i + g].amin(1).float(), w1[:, i : i + g].amax(1).float(), spec.code_spec)
                scale[:, grp], zero[:, grp] = s, z
            s, z = scale[:, grp].double(), zero[:, grp].double()
            q = (torch.clamp(torch.round(col.float() / s.float()).double() + z, 0, spec.qmax) - z) * s
            q_all[:, i1 + i] = q
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    q_all = q_all[:, torch.argsort(perm)]
    return quantize_codes(q_all.float(), scale, zero, spec), scale, zero


def awq_scale(w: torch.Tensor, st: InputStats, spec: GroupSpec, grid: int = 20) -> torch.Tensor | None:
    """AWQ (Lin et al. 2023): per-input-feature scale s = mean|x|^α (normalised), α searched on a
    grid to minimise ‖x Wᵀ − (x/s) Q(W·s)ᵀ‖² over the calibration sample; None when α = 0 wins."""
    x = st.sample.float()
    mean = (st.abs_sum / st.rows).float().clamp_min(1e-5)
    ref = x @ w.t()
    best, best_loss = None, float(((x @ fake_quantize_groups(w, spec).t() - ref) ** 2).mean())
    for step in range(1, grid):
        s = mean.pow(step / grid)
        s = s / (s.max() * s.min()).sqrt()
        loss = float((((x / s) @ fake_quantize_groups(w * s, spec).t() - ref) ** 2).mean())
        if loss < best_loss:
            best, best_loss = s, loss
    return best


def awq_clip(w: torch.Tensor, x: torch.Tensor, spec: GroupSpec, grid: int = 10, floor: float = 0.5) -> torch.Tensor:
    """AWQ's clipping search: per (output row, group), the range ratio in [floor, 1] whose
    quantized weights best reproduce that group's share of the output on the sample x."""
    wg = _grouped(w.float(), spec.group_size)  # (N, G, g)
    xg = _grouped(x.float(), spec.group_size).transpose(0, 1)  # (G, rows, g)
    best_err = torch.full(wg.shape[:2], float("inf"))
    best = torch.ones(wg.shape[:2])
    for step in range(grid + 1):
        ratio = 1.0 - (1.0 - floor) * step / grid
        scale, zero = qparams(wg.amin(-1) * ratio, wg.amax(-1) * ratio, spec.code_spec)
        q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, spec.qmax)
        delta = (q - zero[..., None]) * scale[..., None] - wg  # (N, G, g)
        err = (torch.einsum("grk,ngk->ngr", xg, delta) ** 2).mean(-1)
        better = err < best_err
        best_err, best = torch.where(better, err, best_err), torch.where(better, ratio, best)
    return best


# ---- the model-level entry point ------------------------------------------------------------


def target_names(model: nn.Module, skip: Iterable[str] = ()) -> list[str]:
    """Names of the Linear-like modules to quantize; unknown ``skip`` names are an error."""
    modules = dict(model.named_modules())
    skip = set(skip)
    if unknown := sorted(skip - set(modules)):
        raise QuantError(f"skip names unknown modules {unknown}")
    return [n for n, m in modules.items() if is_linear_like(m) and n not in skip and not _inside(n, skip)]


def _inside(name: str, prefixes: set[str]) -> bool:
    return any(name.startswith(p + ".") for p in prefixes if p)


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def quantize_weight_only(
    model: nn.Module,
    calib_loader: Iterable | None = None,
    *,
    bits: int = 4,
    group_size: int = 128,
    method: str = "rtn",
    symmetric: bool = True,
    skip: Iterable[str] = (),
    max_batches: int | None = None,
    awq_rows: int = 512,
) -> nn.Module:
    """Replaces every Linear-like module of ``model`` (in place) by a :class:`WeightOnlyLinear`.

    GPTQ and AWQ need ``calib_loader``; RTN ignores it.  Statistics of every layer are
    gathered in one pass over the float model (layers are not re-calibrated in sequence)."""
    if method not in METHODS:
        raise QuantError(f"unknown weight-only method {method!r}; choose one of {METHODS}")
    spec = GroupSpec(bits, group_size, symmetric)
    names = target_names(model, skip)
    if not names:
        raise QuantError(f"{type(model).__name__} has no Linear layers to quantize")
    stats: dict[str, InputStats] = {}
    if method != "rtn":
        if calib_loader is None:
            raise QuantError(f"method {method!r} needs calibration data: pass calib_loader")
        stats = collect_input_stats(model, names, calib_loader, hessian=method == "gptq",
                                    abs_stats=method == "awq", max_rows=awq_rows if method == "awq" else 0,
                                    max_batches=max_batches)
    for name in names:
        module = model.get_submodule(name)
        w = linear_weight(module).float()
        in_scale = None
        if method == "gptq":
            codes, scale, zero = gptq(w, stats[name].hessian, spec)
        else:
            s, clip = None, None
            if method == "awq":
                s = awq_scale(w, stats[name], spec)
                x = stats[name].sample.float()
                clip = awq_clip(w if s is None else w * s, x if s is None else x / s, spec)
            codes, scale, zero = rtn(w if s is None else w * s, spec, clip)
            in_scale = None if s is None else (1.0 / s)
        set_module(model, name, WeightOnlyLinear(codes, scale, zero, w.shape[1], spec, module.bias, in_scale))
    return model

