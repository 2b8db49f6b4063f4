"""Converters for the quantized modules: FakeQuantize and QuantConv2d / QuantLinear.

They read only the exporter interface of quant/ (``effective_weight``,
``effective_bias``, ``weight_quant``, ``act``), so post-training and QAT models
export the same way. Weight and bias codes are computed with quant.spec's own
functions: the file holds exactly the integers the simulation uses.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import fx

from export.context import ExportContext
from export.errors import OnnxExportError
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.modules import QuantGlobalMean, QuantWeighted
from quant.spec import INT32_MAX, INT32_MIN, bias_scale, quantize_int


def check_activation_quantizer(fq: FakeQuantize, label: str) -> str | None:
    """Why ``fq`` cannot become a QuantizeLinear/DequantizeLinear pair, or None."""
    if not int(fq.quant_enabled):
        return f"{label} (FakeQuantize): quantization is off; calibrate and freeze the model first"
    if fq.spec.per_channel:
        return f"{label} (FakeQuantize): per-channel activation quantization has no ONNX export"
    container = (-128, 127) if fq.spec.signed else (0, 255)
    if (fq.spec.qmin, fq.spec.qmax) != container:
        return (
            f"{label} (FakeQuantize): range [{fq.spec.qmin}, {fq.spec.qmax}] is not the full "
            f"{fq.spec.onnx_dtype} range that QuantizeLinear saturates to"
        )
    return None


def convert_fake_quantize(cx: ExportContext, node: fx.Node, fq: FakeQuantize) -> str:
    """FakeQuantize → QuantizeLinear + DequantizeLinear (``observe=False`` calls too)."""
    x = cx.tensor(node.args[0])
    out = cx.quant_dequant(x, fq, node.name)
    cx.grid[node] = fq
    return out


@torch.no_grad()
def weight_qparams(mod: QuantWeighted) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight scale/zero point the simulation uses now.

    A quantizer still observing (QAT) re-measures the weight on every call, so the
    stored scale may be stale; it is measured on a copy, leaving the model untouched.
    """
    wq: WeightFakeQuantize = mod.weight_quant
    if int(wq.observe_enabled):
        wq = copy.deepcopy(wq)
        wq.observe_fresh(mod.effective_weight().detach())
    return wq.scale.detach().float(), wq.zero_point.detach()


@torch.no_grad()
def weight_and_bias(
    cx: ExportContext, node: fx.Node, mod: QuantWeighted, transpose: bool
) -> tuple[str, str | None]:
    """DequantizeLinear outputs of the int8 weight codes and the int32 bias codes."""
    b = cx.builder
    w = mod.effective_weight().detach().float()
    s_w, zp_w = weight_qparams(mod)
    per_channel = mod.weight_quant.spec.per_channel and s_w.dim() == 1
    axis = 0 if per_channel else None
    codes = quantize_int(w, s_w, zp_w, mod.weight_quant.spec, axis).to(torch.int8)
    if transpose:  # MatMul wants [in, out]: output channels move to axis 1
        codes = codes.t()
    w_axis = (1 if transpose else 0) if per_channel else None
    name = str(node.target)
    w_q = b.initializer(codes.numpy(), f"{name}.weight_q")
    w_s = b.initializer(s_w.numpy().astype(np.float32), f"{name}.weight_scale")
    w_zp = b.initializer(zp_w.numpy().astype(np.int8), f"{name}.weight_zero_point")
    w_dq = b.node("DequantizeLinear", [w_q, w_s, w_zp], f"{name}.weight_dq", axis=w_axis)

    bias = mod.effective_bias()
    if bias is None:
        return w_dq, None
    s_in = _input_scale(cx, node)
    s_b = bias_scale(s_in, s_w)  # float32, exactly what fake_quantize_bias divides by
    b_codes = torch.clamp(torch.round(bias.detach().float() / s_b), INT32_MIN, INT32_MAX).to(torch.int32)
    b_q = b.initializer(b_codes.numpy(), f"{name}.bias_q")
    b_s = b.initializer(s_b.numpy().astype(np.float32), f"{name}.bias_scale")
    b_zp = b.initializer(np.zeros(s_b.shape, np.int32), f"{name}.bias_zero_point")
    b_dq = b.node("DequantizeLinear", [b_q, b_s, b_zp], f"{name}.bias_dq", axis=0 if s_b.dim() == 1 else None)
    return w_dq, b_dq


def _input_scale(cx: ExportContext, node: fx.Node) -> torch.Tensor:
    """The input quantizer's scale: the ``get_attr`` argument the simulation passes."""
    arg = node.args[1] if len(node.args) > 1 else node.kwargs.get("input_scale")
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        raise OnnxExportError(
            f"{node.name} ({type(cx.modules[node.target]).__name__}): has a bias but no input-scale "
            "argument, so its int32 bias codes are undefined"
        )
    owner, _, attr = str(arg.target).rpartition(".")
    return getattr(cx.gm.get_submodule(owner), attr).detach().float()


def convert_weighted(cx: ExportContext, node: fx.Node, mod: QuantWeighted) -> str:
    """QuantConv2d → DQ(w), DQ(b), Conv; QuantLinear → Gemm (2-D) or MatMul + Add; then the activation."""
    x = cx.dequantized_input(node.args[0])  # type: ignore[arg-type]
    b = cx.builder
    rank = mod.effective_weight().dim()
    hint = node.name
    if rank == 4:
        w_dq, b_dq = weight_and_bias(cx, node, mod, transpose=False)
        y = b.node("Conv", [x, w_dq] + ([b_dq] if b_dq else []), hint, **conv_attrs(mod))
    elif rank == 2 and len(cx.shape(node.args[0])) == 2:
        w_dq, b_dq = weight_and_bias(cx, node, mod, transpose=False)
        y = b.node("Gemm", [x, w_dq] + ([b_dq] if b_dq else []), hint, transB=1)
    elif rank == 2 and (out_fq := _output_quantizer(cx, node)) is not None:
        return _linear_nd_as_gemm(cx, node, mod, x, out_fq)
    elif rank == 2:
        w_dq, b_dq = weight_and_bias(cx, node, mod, transpose=True)
        y = b.node("MatMul", [x, w_dq], f"{hint}_matmul" if b_dq else hint)
        if b_dq:
            y = b.node("Add", [y, b_dq], hint)
    else:
        raise OnnxExportError(
            f"{node.name} ({type(mod).__name__}): weight of rank {rank} is neither Conv2d nor Linear"
        )
    return activation(cx, y, mod.act, hint)


def _output_quantizer(cx: ExportContext, node: fx.Node) -> FakeQuantize | None:
    """The activation quantizer that is this node's only consumer, if it is one."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module":
        return None
    mod = cx.modules[users[0].target]
    return mod if isinstance(mod, FakeQuantize) and not isinstance(mod, WeightFakeQuantize) else None


def _linear_nd_as_gemm(cx: ExportContext, node: fx.Node, mod: QuantWeighted, x: str, out_fq: FakeQuantize) -> str:
    """Linear on (…, K) inputs as Reshape → Gemm → Q/DQ → Reshape.

    ONNX's Gemm is 2-D; MatMul + a float bias Add would make ONNX Runtime add the bias
    in fp32 instead of the int32 accumulator, rounding differently from the simulation
    (and from our runtime) on ties. Reshapes of quantized values are exact, so folding
    the leading dimensions keeps the whole Linear one integer op.
    """
    b = cx.builder
    src = node.args[0]
    k = int(mod.effective_weight().shape[1])
    flat = b.node("Reshape", [x, b.int64s([-1, k], f"{node.name}_flat_shape")], f"{node.name}_flat")
    flat = cx.quant_dequant(flat, cx.grid[src], f"{node.name}_flat")
    w_dq, b_dq = weight_and_bias(cx, node, mod, transpose=False)
    y = b.node("Gemm", [flat, w_dq] + ([b_dq] if b_dq else []), f"{node.name}_gemm", transB=1)
    y = cx.quant_dequant(activation(cx, y, mod.act, node.name), out_fq, f"{node.name}_out")
    out_shape = list(cx.shape(node))
    if cx.dynamic_batch:
        out_shape[0] = -1  # the flat input's first dimension is batch × tokens: 0 would copy that
    return b.node("Reshape", [y, b.int64s(out_shape, f"{node.name}_shape")], node.name)


def convert_global_mean(cx: ExportContext, node: fx.Node, mod: QuantGlobalMean) -> str:
    """QuantGlobalMean → (Transpose → Reshape →) GlobalAveragePool between Q/DQ pairs.

    GlobalAveragePool between DQ and Q is what ONNX Runtime runs as the integer
    QLinearGlobalAveragePool (and our runtime too), the arithmetic the simulation
    emulates; ReduceMean would stay a float op. Reduced dimensions move to the end and
    fold into one spatial axis; reshapes and transposes of quantized values are exact.
    """
    b = cx.builder
    src = node.args[0]
    grid = cx.grid[src]
    shape = list(cx.shape(src))
    rank, dims = len(shape), tuple(mod.dims)
    x = cx.dequantized_input(src)
    if not (rank == 4 and dims == (2, 3)):
        kept = [d for d in range(rank) if d not in dims]
        if kept[0] != 0:
            raise OnnxExportError(f"{node.name} (QuantGlobalMean): averaging over the batch is not exported")
        x = b.node("Transpose", [x], f"{node.name}_perm", perm=kept + list(dims))
        channels = int(np.prod([shape[d] for d in kept[1:]], dtype=np.int64))
        spatial = int(np.prod([shape[d] for d in dims], dtype=np.int64))
        x = b.node("Reshape", [x, b.int64s([0, channels, spatial], f"{node.name}_fold")], f"{node.name}_fold")
        x = cx.quant_dequant(x, grid, f"{node.name}_fold")
    y = b.node("GlobalAveragePool", [x], f"{node.name}_gap")
    y = cx.quant_dequant(y, grid, f"{node.name}_gap")
    out = list(cx.shape(node))
    if cx.dynamic_batch:
        out[0] = 0
    return b.node("Reshape", [y, b.int64s(out, f"{node.name}_shape")], node.name)


def activation(cx: ExportContext, y: str, act: str | None, hint: str) -> str:
    """The fused activation as its own node (ONNX Runtime fuses it back into the int8 op)."""
    if act is None:
        return y
    if act == "relu":
        return cx.builder.node("Relu", [y], f"{hint}_relu")
    if act == "relu6":
        return cx.builder.node("Clip", [y, cx.builder.scalar(0.0), cx.builder.scalar(6.0)], f"{hint}_relu6")
    raise OnnxExportError(f"unknown fused activation {act!r}")


def conv_attrs(mod) -> dict:
    """ONNX Conv attributes from a torch conv's stride/padding/dilation/groups."""
    kernel = (
        list(mod.effective_weight().shape[2:]) if hasattr(mod, "effective_weight") else list(mod.kernel_size)
    )
    attrs: dict = dict(
        kernel_shape=kernel, strides=list(mod.stride), dilations=list(mod.dilation), group=mod.groups
    )
    pad = mod.padding
    if pad == "valid":
        attrs["pads"] = [0, 0, 0, 0]
    elif pad == "same":
        attrs["auto_pad"] = "SAME_UPPER"  # torch puts the odd extra pixel at the end, as SAME_UPPER does
    else:
        attrs["pads"] = [int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1])]
    return attrs
