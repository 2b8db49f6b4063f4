"""Lower a frozen fake-quant GraphModule to its export form: the int8 graph in torch ops.

Each quantized module is replaced by a module computing the same thing with the
custom ops of export/qdq_ops.py, holding the integer codes the file stores (int8
weights per output channel, int32 biases at ``s_in·s_w[c]``, uint8/int8 zero points),
computed with quant.spec's own functions. torch.onnx then writes the float ops with
its maintained ATen table and the quantized patterns with our translations.

A value that passed through exact ops (max-pool, reshape, ...) after its quantizer lies
on that quantizer's grid but is no DequantizeLinear output; before every integer
consumer (DESIGN.md §5 policy kinds weighted/add/matmul/cat) it is quantized again on
the same grid (exact), so ONNX Runtime, TensorRT and the QOperator rewrite all see the
DQ → op → Q pattern.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

import export.qdq_ops  # noqa: F401  (registers torch.ops.compress.*)
from export.errors import OnnxExportError
from export.fold_constants import fold_constants
from quant import policy
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.float_ops import restore_float_ops
from quant.modules import QuantAdd, QuantAvgPool2d, QuantGlobalMean, QuantMatMul, QuantWeighted
from quant.prepare import classify
from quant.spec import INT32_MAX, INT32_MIN, bias_scale, quantize_int

INT8_INPUT_KINDS = (policy.WEIGHTED, policy.ADD, policy.CAT, policy.MATMUL)
ops = torch.ops.compress


class QDQ(nn.Module):
    """An activation quantizer: QuantizeLinear → DequantizeLinear with its scale and zero point."""

    def __init__(self, fq: FakeQuantize) -> None:
        super().__init__()
        dtype = torch.int8 if fq.spec.signed else torch.uint8
        self.register_buffer("scale", fq.scale.detach().float().reshape(()).clone())
        self.register_buffer("zero_point", fq.zero_point.detach().reshape(()).to(dtype).clone())
        self.register_buffer("quant_enabled", torch.tensor(1, dtype=torch.uint8))

    def forward(self, x: torch.Tensor, observe: bool = True) -> torch.Tensor:
        return ops.qdq(x, self.scale, self.zero_point)


def _act(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return torch.clamp(y, 0.0, 6.0)
    return y


class Weighted(nn.Module):
    """Conv / Linear over DequantizeLinear'd int8 weight codes and int32 bias codes (+ fused activation)."""

    def __init__(self, mod: QuantWeighted, input_grid: QDQ, out_grid: QDQ | None) -> None:
        super().__init__()
        w = mod.effective_weight().detach().float()
        wq = mod.weight_quant
        if int(wq.observe_enabled):  # QAT still observing: measure the current weight on a copy
            wq = copy.deepcopy(wq)
            wq.observe_fresh(w)
        s_w, zp_w = wq.scale.detach().float(), wq.zero_point.detach()
        self.axis = 0 if (wq.spec.per_channel and s_w.dim() == 1) else 1
        codes = quantize_int(w, s_w, zp_w, wq.spec, 0 if self.axis == 0 else None).to(torch.int8)
        self.register_buffer("weight_q", codes)
        self.register_buffer("weight_scale", s_w.clone())
        self.register_buffer("weight_zero_point", zp_w.to(torch.int8).clone())
        bias = mod.effective_bias()
        self.has_bias = bias is not None
        if bias is not None:
            s_b = bias_scale(input_grid.scale, s_w)  # float32: what fake_quantize_bias divides by
            b_codes = torch.clamp(torch.round(bias.detach().float() / s_b), INT32_MIN, INT32_MAX).to(torch.int32)
            self.register_buffer("bias_q", b_codes)
            self.register_buffer("bias_scale", s_b.clone())
            self.register_buffer("bias_zero_point", torch.zeros(s_b.shape, dtype=torch.int32))
        self.act = mod.act
        self.conv = {k: getattr(mod, k) for k in ("stride", "padding", "dilation", "groups") if hasattr(mod, k)}
        self.input_grid = input_grid
        self.out_grid = out_grid

    def int8_weight(self) -> torch.Tensor:
        return ops.dequantize(self.weight_q, self.weight_scale, self.weight_zero_point, self.axis)

    def int32_bias(self) -> torch.Tensor | None:
        if not self.has_bias:
            return None
        return ops.dequantize(self.bias_q, self.bias_scale, self.bias_zero_point, 0)

    def forward(self, x: torch.Tensor, *_grids: torch.Tensor) -> torch.Tensor:
        if self.weight_q.dim() == 4:
            return _act(F.conv2d(x, self.int8_weight(), self.int32_bias(), **self.conv), self.act)
        if self.weight_q.dim() == 3:  # Conv1d: QLinearConv with a 1-D kernel
            return _act(F.conv1d(x, self.int8_weight(), self.int32_bias(), **self.conv), self.act)
        if x.dim() == 2:
            return _act(F.linear(x, self.int8_weight(), self.int32_bias()), self.act)
        # Linear on (…, K): Reshape → Gemm → Q/DQ → Reshape. MatMul + a float bias Add would make
        # ONNX Runtime add the bias in fp32 instead of the int32 accumulator, rounding differently.
        # Without an output grid (a float residual stream) the Gemm's fp32 output is the int32
        # accumulator times s_x·s_w, which the runtime folds into QGemm exactly as simulated.
        lead = x.shape[:-1]
        flat = self.input_grid(x.reshape(-1, x.shape[-1]))
        y = _act(F.linear(flat, self.int8_weight(), self.int32_bias()), self.act)
        if self.out_grid is not None:
            y = self.out_grid(y)
        return y.reshape(*lead, y.shape[-1])


class Binary(nn.Module):
    """QuantAdd / QuantMatMul: the plain op between DQ inputs and the output Q (ORT's QLinearAdd/MatMul)."""

    def __init__(self, matmul: bool) -> None:
        super().__init__()
        self.matmul = matmul

    def forward(self, a: torch.Tensor, b: torch.Tensor, *_grids: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b) if self.matmul else a + b


class GlobalMean(nn.Module):
    """QuantGlobalMean: (Transpose → Reshape →) GlobalAveragePool between Q/DQ pairs, then Reshape."""

    def __init__(self, mod: QuantGlobalMean, grid: QDQ) -> None:
        super().__init__()
        self.dims, self.keepdim, self.grid = tuple(mod.dims), mod.keepdim, grid

    def forward(self, x: torch.Tensor, *_grids: torch.Tensor) -> torch.Tensor:
        rank = x.dim()
        if rank == 4 and self.dims == (2, 3):
            y = self.grid(ops.global_average_pool(x))
            return y if self.keepdim else y.reshape(y.shape[0], y.shape[1])
        kept = [d for d in range(rank) if d not in self.dims]
        if kept[0] != 0:
            raise OnnxExportError("a quantized mean over the batch dimension is not exported")
        folded = x.permute(*kept, *self.dims).reshape(x.shape[0], -1, _prod(x.shape[d] for d in self.dims))
        y = self.grid(ops.global_average_pool(self.grid(folded)))
        shape = [1 if d in self.dims else x.shape[d] for d in range(rank)] if self.keepdim else [x.shape[d]
                                                                                              for d in kept]
        return y.reshape(shape)


class AvgPool(nn.Module):
    """QuantAvgPool2d: AveragePool between DQ and Q (ONNX Runtime's and our runtime's QLinearAveragePool)."""

    def __init__(self, mod: QuantAvgPool2d) -> None:
        super().__init__()
        self.args = (mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode, mod.count_include_pad)

    def forward(self, x: torch.Tensor, *_grids: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, *self.args)


def _prod(values) -> int:
    out = 1
    for v in values:
        out = out * v
    return out


def lower(qmodel: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``qmodel`` in export form (the input model is untouched)."""
    gm = copy.deepcopy(qmodel).eval()
    fold_constants(gm)  # constant subgraphs in the simulation's arithmetic, not the exporter's
    restore_float_ops(gm)  # the file holds plain ONNX ops; the runtime computes them as FloatOp did
    modules = dict(gm.named_modules())
    grids: dict[str, QDQ] = {}
    for name, m in modules.items():
        if isinstance(m, FakeQuantize) and not isinstance(m, WeightFakeQuantize):
            problem = _check_quantizer(m, name)
            if problem:
                raise OnnxExportError(problem)
            grids[name] = QDQ(m)
    node_grid: dict[fx.Node, str] = {}
    for node in list(gm.graph.nodes):
        kind = classify(node, modules)
        if node.op == "call_module" and node.target in grids:
            node_grid[node] = str(node.target)
            continue
        if kind in INT8_INPUT_KINDS or isinstance(modules.get(str(node.target)), (QuantGlobalMean, QuantAvgPool2d)):
            _requantize_inputs(gm, node, node_grid, kind)
        if kind == policy.EXACT and node.args and node.args[0] in node_grid:
            node_grid[node] = node_grid[node.args[0]]
    for name, qdq in grids.items():
        _set(gm, name, qdq)
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = modules.get(str(node.target))
        if isinstance(mod, QuantWeighted):
            x = node.args[0]
            out = next((u for u in node.users if u.op == "call_module" and u.target in grids), None)
            if len(node.users) != 1:
                out = None
            lowered = Weighted(mod, grids[node_grid[x]], grids[out.target] if out else None)
            for attr in _read_elsewhere(gm, str(node.target)):  # a tied weight (GPT-2's lm_head and wte)
                lowered.register_buffer(attr, getattr(mod, attr).detach().clone())
            _set(gm, str(node.target), lowered)
        elif isinstance(mod, (QuantAdd, QuantMatMul)):
            _set(gm, str(node.target), Binary(isinstance(mod, QuantMatMul)))
        elif isinstance(mod, QuantAvgPool2d):
            _set(gm, str(node.target), AvgPool(mod))
        elif isinstance(mod, QuantGlobalMean):
            _set(gm, str(node.target), GlobalMean(mod, grids[node_grid[node.args[0]]]))
    gm.recompile()
    return gm


def _read_elsewhere(gm: fx.GraphModule, owner: str) -> set[str]:
    """Float parameters of module ``owner`` that other ops read directly (``get_attr``)."""
    return {str(n.target).rpartition(".")[2] for n in gm.graph.nodes
            if n.op == "get_attr" and str(n.target).rpartition(".")[0] == owner
            and str(n.target).rpartition(".")[2] in ("weight", "bias")}


def _requantize_inputs(gm: fx.GraphModule, node: fx.Node, node_grid: dict[fx.Node, str], kind: str) -> None:
    """Before an integer consumer, put a Q/DQ (same grid, exact) on inputs that are no quantizer output."""
    args = list(node.args[0]) if kind == policy.CAT else list(node.args)
    changed = False
    for i, a in enumerate(args):
        if not isinstance(a, fx.Node) or a not in node_grid or (a.op == "call_module" and a.target == node_grid[a]):
            continue
        with gm.graph.inserting_before(node):
            args[i] = gm.graph.call_module(node_grid[a], (a,))
        node_grid[args[i]] = node_grid[a]
        changed = True
    if changed:
        node.args = (args, *node.args[1:]) if kind == policy.CAT else tuple(args)


def _check_quantizer(fq: FakeQuantize, label: str) -> str | None:
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


def _set(gm: nn.Module, qualname: str, module: nn.Module) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)
