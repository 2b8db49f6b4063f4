"""State shared by the op converters while one fx graph becomes one ONNX graph.

Every fx node maps to a *value*: the name of an ONNX tensor (``str``), or a plain
Python value (ints of a static shape, a tuple from ``size()``, a dtype, ...). Shapes
come from torch.fx ShapeProp on the example inputs; dimension 0 is the batch
dimension, symbolic in the file when ``dynamic_batch`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from export.builder import GraphBuilder
from export.errors import OnnxExportError
from quant.fake_quant import FakeQuantize

TORCH_TO_ONNX = {
    torch.float32: 1,
    torch.uint8: 2,
    torch.int8: 3,
    torch.int32: 6,
    torch.int64: 7,
    torch.bool: 9,
}


@dataclass
class ExportContext:
    gm: fx.GraphModule
    builder: GraphBuilder
    dynamic_batch: bool
    modules: dict[str, nn.Module] = field(default_factory=dict)
    env: dict[fx.Node, Any] = field(default_factory=dict)
    # fx node -> the FakeQuantize whose grid its value lies on (kept through exact ops)
    grid: dict[fx.Node, FakeQuantize] = field(default_factory=dict)
    # ONNX tensor produced by a DequantizeLinear -> the quantizer it dequantizes with
    dq_params: dict[str, FakeQuantize] = field(default_factory=dict)
    _qparam_names: dict[int, tuple[str, str]] = field(default_factory=dict)
    _requantized: dict[str, str] = field(default_factory=dict)

    @property
    def opset(self) -> int:
        return self.builder.opset

    # --- values -----------------------------------------------------------------------
    def value(self, arg: Any) -> Any:
        """The value of an fx argument (recursing into lists/tuples)."""
        if isinstance(arg, fx.Node):
            return self.env[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def tensor(self, arg: Any, like: np.dtype = np.float32) -> str:
        """An ONNX tensor name for ``arg``; Python numbers become constants of dtype ``like``."""
        v = self.value(arg)
        if isinstance(v, str):
            return v
        if isinstance(v, (int, float, bool)):
            return self.builder.scalar(v, like)
        if isinstance(v, torch.Tensor):
            return self.builder.initializer(v.detach().cpu().numpy(), "const")
        raise OnnxExportError(f"expected a tensor, got {type(v).__name__} {v!r}")

    @staticmethod
    def shape(node: Any) -> tuple[int, ...]:
        """Static shape recorded by ShapeProp for an fx node's tensor value."""
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        if meta is None or not hasattr(meta, "shape"):
            raise OnnxExportError(f"no recorded shape for {node}")
        return tuple(int(d) for d in meta.shape)

    def reshape_target(self, src: fx.Node, dst: fx.Node) -> str:
        """Reshape target for ``dst``'s static shape with the batch dimension left free.

        View arguments computed from ``size()`` are example values, so the static output
        shape is used instead; with a dynamic batch its first dimension becomes 0 (copy
        the input's batch) when the batch stays in place, else -1 (whatever it takes).
        """
        out = list(self.shape(dst))
        if self.dynamic_batch and out:
            out[0] = 0 if self.shape(src)[:1] == tuple(out[:1]) else -1
        return self.builder.int64s(out, f"{dst.name}_shape")

    # --- quantization -------------------------------------------------------------------
    def qparams(self, fq: FakeQuantize) -> tuple[str, str]:
        """Shared (scale, zero point) initializers for one activation quantizer."""
        key = id(fq)
        if key not in self._qparam_names:
            zp_dtype = np.int8 if fq.spec.signed else np.uint8
            label = fq.name or "act"
            scale = self.builder.initializer(np.array(float(fq.scale), np.float32), f"{label}.scale")
            zp = self.builder.initializer(np.array(int(fq.zero_point), zp_dtype), f"{label}.zero_point")
            self._qparam_names[key] = (scale, zp)
        return self._qparam_names[key]

    def quant_dequant(self, x: str, fq: FakeQuantize, hint: str) -> str:
        """QuantizeLinear → DequantizeLinear of ``x`` on ``fq``'s grid; returns the DQ output."""
        scale, zp = self.qparams(fq)
        q = self.builder.node("QuantizeLinear", [x, scale, zp], f"{hint}_q")
        dq = self.builder.node("DequantizeLinear", [q, scale, zp], f"{hint}_dq")
        self.dq_params[dq] = fq
        return dq

    def dequantized_input(self, arg: fx.Node) -> str:
        """``arg``'s tensor as a DequantizeLinear output, so that an int8 op can consume it.

        A value that passed through exact ops (max-pool, flatten, ...) after its quantizer
        lies on that quantizer's grid but is no DQ output; a Q/DQ pair with the same
        parameters is inserted (exact: the value is already on the grid). This gives
        ONNX Runtime, TensorRT and the QOperator pass the DQ → op → Q pattern.
        """
        name = self.env[arg]
        if name in self.dq_params or arg not in self.grid:
            return name
        if name not in self._requantized:
            self._requantized[name] = self.quant_dequant(name, self.grid[arg], f"{arg.name}_requant")
        return self._requantized[name]
