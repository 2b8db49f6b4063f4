"""Dynamic int8 LSTM, GRU and RNN: what torch.ao's dynamic LSTM and ONNX Runtime's quantizer do.

W (input weights) and R (recurrent weights) of every gate are int8, symmetric, one scale per
output row (``quant.dynamic.int8_per_channel``), fixed at conversion.  At run time the layer's
whole input sequence X is quantized once per tensor (uint8, DynamicQuantizeLinear's formulas)
and each step's hidden state h_{t-1} once per tensor (over the batch) before the recurrent
product; the products are exact integer accumulators; everything after is fp32.

The simulation computes exactly what the exported file computes in the bundled runtime:

- ``xw = fp32(acc(X, W)) · fp32(s_X·s_W)`` for all steps (no bias), per direction;
- per step ``rh = fp32(acc(h, R)) · fp32(s_h·s_R)``;
- LSTM (ORT's DynamicQuantizeLSTM order): ``pre = (xw_t + rh) + fp32(b_ih + b_hh)``;
  ``i, f, o = σ(pre)``, ``g = tanh(pre)``; ``c = f·c_prev + i·g``; ``h = o·tanh(c)``;
- GRU (ONNX GRU with linear_before_reset=1, torch's form): ``r = σ((x_r + h_r) + (b_ir + b_hr))``,
  ``z = σ((x_z + h_z) + (b_iz + b_hz))``, ``n = tanh((x_n + b_in) + r·(h_n + b_hn))``,
  ``h = (1 - z)·n + z·h_prev``;
- RNN: ``h = act((xw_t + rh) + (b_ih + b_hh))``, act tanh or relu;

each fp32 operation rounded in that order, and σ / tanh evaluated in float64 and rounded once
to fp32 (``σ(v) = 1 / (1 + exp(-v))``), so the runtime's numpy and this torch code agree to the
bit: an ulp of difference in h would move a code of the next step's quantized h.  ONNX
Runtime runs the same integer products but MLAS's approximate σ/tanh in DynamicQuantizeLSTM
(≤ 2e-5 a step; over long sequences they move some codes of h); the unrolled GRU / RNN files
run in ORT to the same bits.

Packed sequences and LSTM projections (``proj_size``) are refused, named.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from quant.dynamic import dynamic_product, int8_per_channel
from quant.errors import QuantError
from quant.float_ops import sigmoid, tanh  # the runtime's arithmetic: fp64, rounded once

# torch's gate order -> ONNX's: LSTM (i, f, g, o) -> (i, o, f, c); GRU (r, z, n) -> (z, r, h); RNN one gate
ONNX_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN": (0,)}


def to_onnx_gates(t: torch.Tensor, kind: str) -> torch.Tensor:
    """Rows (or elements) of a per-gate stacked tensor reordered from torch's order to ONNX's."""
    chunks = t.chunk(len(ONNX_GATE_ORDER[kind]), dim=0)
    return torch.cat([chunks[i] for i in ONNX_GATE_ORDER[kind]], dim=0)


class _DynamicRecurrent(nn.Module, abc.ABC):
    """Shared part: int8 W/R per layer and direction, the layer/direction driver, and the
    dequantized weights the export's float twin carries."""

    kind = ""
    gates = 0

    def __init__(self, rnn: nn.LSTM | nn.GRU | nn.RNN) -> None:
        super().__init__()
        if getattr(rnn, "proj_size", 0):
            raise QuantError(f"dynamic int8 {self.kind}: proj_size={rnn.proj_size} (LSTM projections) is not supported")
        self.input_size, self.hidden_size = rnn.input_size, rnn.hidden_size
        self.num_layers, self.bidirectional = rnn.num_layers, rnn.bidirectional
        self.batch_first, self.bias = rnn.batch_first, rnn.bias
        self.dirs = 2 if rnn.bidirectional else 1
        for layer in range(self.num_layers):
            for d in range(self.dirs):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                for part in ("ih", "hh"):
                    q, s = int8_per_channel(getattr(rnn, f"weight_{part}{sfx}"))
                    self.register_buffer(f"qweight_{part}{sfx}", q)
                    self.register_buffer(f"scale_{part}{sfx}", s)
                    b = getattr(rnn, f"bias_{part}{sfx}", None) if rnn.bias else None
                    self.register_buffer(f"bias_{part}{sfx}", None if b is None else b.detach().float().clone())

    def _params(self, layer: int, d: int) -> tuple[torch.Tensor, ...]:
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        zeros = torch.zeros(self.gates * self.hidden_size)
        b_ih, b_hh = getattr(self, f"bias_ih{sfx}"), getattr(self, f"bias_hh{sfx}")
        return (getattr(self, f"qweight_ih{sfx}"), getattr(self, f"scale_ih{sfx}"), getattr(self, f"qweight_hh{sfx}"),
                getattr(self, f"scale_hh{sfx}"), zeros if b_ih is None else b_ih, zeros if b_hh is None else b_hh)

    def dequantized(self, layer: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_ih, W_hh) as the float twin holds them: codes times scales, torch's gate order."""
        qi, si, qh, sh, _, _ = self._params(layer, d)
        return qi.float() * si[:, None], qh.float() * sh[:, None]

    def _twin_kwargs(self) -> dict:
        return {}

    def float_twin(self) -> nn.LSTM | nn.GRU | nn.RNN:
        """The float nn.LSTM / nn.GRU over the dequantized weights (what torch.onnx exports)."""
        rnn = getattr(nn, self.kind)(self.input_size, self.hidden_size, num_layers=self.num_layers, bias=self.bias,
                                     batch_first=self.batch_first, bidirectional=self.bidirectional,
                                     **self._twin_kwargs())
        with torch.no_grad():
            for layer in range(self.num_layers):
                for d in range(self.dirs):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    w_ih, w_hh = self.dequantized(layer, d)
                    getattr(rnn, f"weight_ih{sfx}").copy_(w_ih)
                    getattr(rnn, f"weight_hh{sfx}").copy_(w_hh)
                    if self.bias:
                        getattr(rnn, f"bias_ih{sfx}").copy_(getattr(self, f"bias_ih{sfx}"))
                        getattr(rnn, f"bias_hh{sfx}").copy_(getattr(self, f"bias_hh{sfx}"))
        return rnn.eval()

    @abc.abstractmethod
    def _step(self, xw_t: torch.Tensor, states: list[torch.Tensor], rh: torch.Tensor, b_ih: torch.Tensor,
              b_hh: torch.Tensor) -> list[torch.Tensor]:
        """One time step: the new states (h first) from this step's input product and h's product."""

    def _run(self, x: torch.Tensor, states: list[torch.Tensor | None]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if isinstance(x, nn.utils.rnn.PackedSequence):
            raise QuantError(f"dynamic int8 {self.kind}: packed sequences are not supported")
        x = x.float()
        if x.dim() != 3:
            raise QuantError(f"dynamic int8 {self.kind} takes a batched 3-D input, got shape {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        seq, batch = x.shape[:2]
        init = [torch.zeros(self.num_layers * self.dirs, batch, self.hidden_size) if s is None else s.float()
                for s in states]
        finals: list[list[torch.Tensor]] = [[] for _ in states]
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.dirs):
                qi, si, qh, sh, b_ih, b_hh = self._params(layer, d)
                xw = dynamic_product(x, qi, si)  # all steps, X quantized once per tensor
                st = [s[layer * self.dirs + d] for s in init]
                ys: list[torch.Tensor] = [torch.empty(0)] * seq
                for t in (range(seq - 1, -1, -1) if d else range(seq)):
                    rh = dynamic_product(st[0], qh, sh)
                    st = self._step(xw[t], st, rh, b_ih, b_hh)
                    ys[t] = st[0]
                outs.append(torch.stack(ys))
                for f, s in zip(finals, st, strict=True):
                    f.append(s)
            x = torch.cat(outs, dim=-1)
        y = x.transpose(0, 1) if self.batch_first else x
        return y, [torch.stack(f) for f in finals]

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, bidirectional={self.bidirectional}, int8 dynamic")


class DynamicLSTM(_DynamicRecurrent):
    """nn.LSTM with int8 W/R and run-time quantized X and h (module docstring: the arithmetic)."""

    kind, gates = "LSTM", 4

    def _step(self, xw_t, states, rh, b_ih, b_hh):
        h_prev, c_prev = states
        pre = (xw_t + rh) + (b_ih + b_hh)
        pi, pf, pg, po = pre.chunk(4, dim=-1)
        i, f, g, o = sigmoid(pi), sigmoid(pf), tanh(pg), sigmoid(po)
        c = f * c_prev + i * g
        return [o * tanh(c), c]

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor] | None = None):
        y, (h, c) = self._run(x, [None, None] if hx is None else list(hx))
        return y, (h, c)


class DynamicGRU(_DynamicRecurrent):
    """nn.GRU with int8 W/R and run-time quantized X and h (module docstring: the arithmetic)."""

    kind, gates = "GRU", 3

    def _step(self, xw_t, states, rh, b_ih, b_hh):
        (h_prev,) = states
        xr, xz, xn = xw_t.chunk(3, dim=-1)
        hr, hz, hn = rh.chunk(3, dim=-1)
        bir, biz, bin_ = b_ih.chunk(3)
        bhr, bhz, bhn = b_hh.chunk(3)
        r = sigmoid((xr + hr) + (bir + bhr))
        z = sigmoid((xz + hz) + (biz + bhz))
        n = tanh((xn + bin_) + r * (hn + bhn))
        return [(1 - z) * n + z * h_prev]

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None):
        y, (h,) = self._run(x, [hx])
        return y, h


class DynamicRNN(_DynamicRecurrent):
    """nn.RNN (tanh or relu) with int8 W/R and run-time quantized X and h:
    ``h = act((xw_t + rh) + fp32(b_ih + b_hh))``, tanh in float64 rounded to fp32."""

    kind, gates = "RNN", 1

    def __init__(self, rnn: nn.RNN) -> None:
        super().__init__(rnn)
        self.nonlinearity = rnn.nonlinearity

    def _twin_kwargs(self) -> dict:
        return {"nonlinearity": self.nonlinearity}

    def _step(self, xw_t, states, rh, b_ih, b_hh):
        pre = (xw_t + rh) + (b_ih + b_hh)
        return [tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)]

    def forward(self, x: torch.Tensor, hx: torch.Tensor | None = None):
        y, (h,) = self._run(x, [hx])
        return y, h

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity}"


DYNAMIC_RNN: dict[type, type[_DynamicRecurrent]] = {nn.LSTM: DynamicLSTM, nn.GRU: DynamicGRU, nn.RNN: DynamicRNN}


def dynamic_rnn_class(module: nn.Module) -> type[_DynamicRecurrent] | None:
    """The dynamic int8 class replacing ``module`` (an nn.LSTM / nn.GRU or a subclass), or None."""
    return next((cls for base, cls in DYNAMIC_RNN.items() if isinstance(module, base)), None)
