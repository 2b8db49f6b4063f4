"""Per-layer report of a quantized model: what runs in int8, what stayed float and why,
each output's scale and its SQNR against fp32 on calibration data (DESIGN.md §5).

The fp32 reference is the same prepared graph with every quantizer switched off (BN
folded, which is the float model's eval arithmetic); both runs go node by node through
``torch.fx.Interpreter`` so every op's output is compared, not only the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from compress.errors import QuantizationError, translate_errors
from quant import policy
from quant.calibrate import set_mode, split_batch, to_device
from quant.capture import flat_inputs
from quant.fake_quant import FakeQuantize
from quant.float_ops import FloatOp
from quant.modules import QuantAdd, QuantAvgPool2d, QuantGlobalMean, QuantMatMul, QuantWeighted
from quant.prepare import classify


@dataclass
class LayerRow:
    """One op of the quantized graph."""

    name: str  # the graph node ("conv2d_3", "layer1.0.conv1", "add_1")
    module: str  # the model's module it belongs to ("layer1.0", "" for the model itself)
    op: str  # "Conv2d", "aten::gelu", ...
    int8: bool  # runs as an integer kernel (or moves int8 codes unchanged)
    why: str  # how it is quantized, or why it stayed float
    scale: float | None  # scale of the grid its output lies on (None: float output)
    sqnr_db: float | None = None  # its output against fp32 over the data seen (inf: identical)


@dataclass
class LayerReport:
    rows: list[LayerRow] = field(default_factory=list)
    batches: int = 0

    @property
    def float_rows(self) -> list[LayerRow]:
        return [r for r in self.rows if not r.int8]

    def table(self) -> str:
        """A markdown table, one row per op, in graph order."""
        lines = [
            f"Per-layer report ({self.batches} calibration batch(es); SQNR of each output against fp32)",
            "",
            "| # | op | module | type | int8 | scale | SQNR dB | how / why float |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, r in enumerate(self.rows):
            scale = f"{r.scale:.4g}" if r.scale is not None else ""
            sqnr = "" if r.sqnr_db is None else ("inf" if math.isinf(r.sqnr_db) else f"{r.sqnr_db:.1f}")
            lines.append(
                f"| {i} | {r.name} | {r.module} | {r.op} | {'yes' if r.int8 else 'no'} | {scale} | {sqnr} | {r.why} |"
            )
        n_float = len(self.float_rows)
        lines += ["", f"{len(self.rows) - n_float} op(s) int8, {n_float} float"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        return list(stack.values())[-1][0]
    return str(node.target).rpartition(".")[0] if node.op == "call_module" else ""


def _op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        module = modules[str(node.target)]
        return module.op_name if isinstance(module, FloatOp) else type(module).__name__
    if node.op == "call_function":
        return policy.aten_name(node.target) or getattr(node.target, "__name__", str(node.target))
    return f".{node.target}()"


class _Rows:
    """Classifies every op of a prepared graph the way prepare did (quant/policy.py)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.modules = dict(gm.named_modules())
        self.grid: dict[fx.Node, FakeQuantize] = {}

    def quantizer(self, node: fx.Node) -> FakeQuantize | None:
        if node.op != "call_module":
            return None
        m = self.modules[str(node.target)]
        return m if isinstance(m, FakeQuantize) else None

    def out_scale(self, node: fx.Node) -> float | None:
        users = [u for u in node.users if self.quantizer(u) is not None]
        fq = self.quantizer(users[0]) if users else self.grid.get(node)
        return float(fq.scale) if fq is not None else None

    def row(self, node: fx.Node) -> LayerRow | None:
        fq = self.quantizer(node)
        if fq is not None:
            self.grid[node] = fq
            return None
        if node.op not in ("call_module", "call_function", "call_method"):
            return None
        meta = node.meta.get("tensor_meta")
        if not (hasattr(meta, "dtype") and meta.dtype.is_floating_point):
            return None  # shape arithmetic, masks, index tensors: nothing to quantize
        kind = classify(node, self.modules)
        mod = self.modules.get(str(node.target)) if node.op == "call_module" else None
        src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        int8, why = False, f"{kind}: no integer kernel, runs in float between DequantizeLinear/QuantizeLinear"
        if isinstance(mod, QuantWeighted):
            spec = mod.weight_quant.spec
            chan = "per channel" if spec.per_channel else "per tensor"
            act = f" + {mod.act}" if mod.act else ""
            int8, why = True, f"integer kernel: int{spec.bits} weights {chan}, int32 bias{act}"
        elif isinstance(mod, (QuantAdd, QuantMatMul, QuantGlobalMean, QuantAvgPool2d)):
            int8, why = True, f"integer kernel ({type(mod).__name__.removeprefix('Quant')})"
        elif isinstance(mod, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            why = "left float by skip=[...]"
        elif kind == policy.CAT:
            int8, why = True, "integer concat (inputs requantized to the output grid)"
        elif kind in (policy.EXACT, policy.REQUANT) and src in self.grid:
            self.grid[node] = self.grid[src]
            int8 = True
            why = "moves int8 codes unchanged" if kind == policy.EXACT else "integer pooling, re-rounded on its grid"
        elif kind in (policy.EXACT, policy.REQUANT):
            why = f"{kind} op on a float input"
        elif node.op == "call_function" and policy.function_kind(node.target) == policy.ADD:
            why = "add left float (float_adds=True, a broadcast, or a scaled add)"
        return LayerRow(node.name, _module_path(node), _op_name(node, self.modules), int8, why, self.out_scale(node))


class _Recorder(fx.Interpreter):
    """Runs the graph, keeping every node's tensor output."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm)
        self.wanted = wanted
        self.outputs: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted and isinstance(out, torch.Tensor) and out.is_floating_point():
            self.outputs[n.name] = out.detach().double()
        return out


@torch.no_grad()
@translate_errors
def layer_report(
    qmodel: fx.GraphModule,
    loader: Iterable,
    *,
    max_batches: int = 4,
    transform_fn: Callable[[Any], Any] | None = None,
    input_model: nn.Module | None = None,
) -> LayerReport:
    """The per-layer report of ``qmodel`` (from ``compress.quantize``) over up to ``max_batches`` batches.

    ``input_model`` is the float model whose forward decides how tuple batches are read
    (``quant.split_batch``); ``transform_fn`` as in ``compress.quantize``.
    """
    if not isinstance(qmodel, fx.GraphModule):
        raise QuantizationError(f"a layer report needs the GraphModule compress.quantize returns, got "
                                f"{type(qmodel).__name__}")
    classifier = _Rows(qmodel)
    rows = [r for n in qmodel.graph.nodes if (r := classifier.row(n))]
    report = LayerReport(rows)
    wanted = {r.name for r in rows}
    signal = dict.fromkeys(wanted, 0.0)
    noise = dict.fromkeys(wanted, 0.0)
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    was_training = qmodel.training
    qmodel.eval()
    flags = {name: (bool(m.observe_enabled), bool(m.quant_enabled))
             for name, m in qmodel.named_modules() if isinstance(m, FakeQuantize)}
    try:
        for batch in loader:
            args, kwargs = split_batch(batch, transform_fn, input_model or qmodel)
            flat = flat_inputs(qmodel, to_device(args, device), to_device(kwargs, device))
            runs = []
            for quant in (True, False):
                set_mode(qmodel, observe=False, quant=quant)
                rec = _Recorder(qmodel, wanted)
                rec.run(*flat, enable_io_processing=False)
                runs.append(rec.outputs)
            for name, q in runs[0].items():
                ref = runs[1].get(name)
                if ref is not None and ref.shape == q.shape:
                    signal[name] += float((ref * ref).sum())
                    noise[name] += float(((ref - q) ** 2).sum())
            report.batches += 1
            if report.batches >= max_batches:
                break
    finally:
        for name, m in qmodel.named_modules():
            if isinstance(m, FakeQuantize):
                m.enable(observe=flags[name][0], quant=flags[name][1])
        qmodel.train(was_training)
    if report.batches == 0:
        raise QuantizationError("the loader for the layer report is empty: it yielded no batch")
    for r in rows:
        if r.name in signal and (signal[r.name] or noise[r.name]):
            ratio = max(signal[r.name], 1e-300) / noise[r.name] if noise[r.name] else math.inf
            r.sqnr_db = 10 * math.log10(ratio) if ratio != math.inf else math.inf
    return report

