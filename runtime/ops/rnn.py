"""LSTM, GRU and RNN (fp32 numpy, one matrix product per step), forward, reverse or
bidirectional, with sequence_lens, initial states, peepholes, clip, layout and the
activation functions ONNX lists; and ONNX Runtime's com.microsoft DynamicQuantizeLSTM, the
dynamic int8 LSTM (int8 W and R with per-channel scales, X and each step's hidden state
quantized at run time, integer products on the C GEMM)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.errors import InferenceError
from runtime.graph import MS_DOMAIN
from runtime.ops.matmul_integer import ConstantInt8Product, dynamic_quantize
from runtime.ops.registry import register
from runtime.qmath import centered_weights


def _activation(name: str, alpha: float | None, beta: float | None) -> Callable[[np.ndarray], np.ndarray]:
    a = alpha
    fns = {
        "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
        "affine": lambda x: (1.0 if a is None else a) * x + (0.0 if beta is None else beta),
        "leakyrelu": lambda x: np.where(x >= 0, x, (0.01 if a is None else a) * x),
        "thresholdedrelu": lambda x: np.where(x > (1.0 if a is None else a), x, 0),
        "scaledtanh": lambda x: (1.0 if a is None else a) * np.tanh((1.0 if beta is None else beta) * x),
        "hardsigmoid": lambda x: np.clip((0.2 if a is None else a) * x + (0.5 if beta is None else beta), 0, 1),
        "elu": lambda x: np.where(x > 0, x, (1.0 if a is None else a) * np.expm1(x)),
        "softsign": lambda x: x / (1 + np.abs(x)),
        "softplus": lambda x: np.logaddexp(0, x),
    }
    if name.lower() not in fns:
        raise InferenceError(f"unknown RNN activation {name!r}")
    return fns[name.lower()]


def _activations(attrs: dict, defaults: list[str], directions: int) -> list[list[Callable]]:
    names = list(attrs.get("activations") or defaults * directions)
    alphas, betas = list(attrs.get("activation_alpha") or []), list(attrs.get("activation_beta") or [])
    fns = [
        _activation(n, alphas[i] if i < len(alphas) else None, betas[i] if i < len(betas) else None)
        for i, n in enumerate(names)
    ]
    k = len(defaults)
    return [fns[d * k : (d + 1) * k] for d in range(directions)]


class _Recurrence:
    """Shared driver: inputs in (seq, batch, features), one cell step per time step, states
    frozen and outputs zero past each batch entry's sequence length."""

    def __init__(self, node, graph, gates: int, default_acts: list[str]) -> None:
        self.attrs, self.gates = node.attrs, gates
        self.where = f"{graph.source}: {node.describe()}"
        self.direction = node.attrs["direction"]
        self.dirs = 2 if self.direction == "bidirectional" else 1
        self.acts = _activations(node.attrs, default_acts, self.dirs)
        self.clip = node.attrs.get("clip")
        self.layout = node.attrs["layout"]

    def pre(self, v: np.ndarray) -> np.ndarray:
        return v if self.clip is None else np.clip(v, -self.clip, self.clip)

    def run(self, cell, project, x, seq_lens, states: list[np.ndarray | None], hidden: int):
        """``project(d, x)``: direction d's input product of all steps at once, (seq, batch,
        gates·hidden); ``cell(d, xw_t, states)``: the new states, the output first."""
        if self.layout:
            x = x.swapaxes(0, 1)
            states = [None if s is None else s.swapaxes(0, 1) for s in states]
        seq, batch = x.shape[:2]
        lens = np.full(batch, seq, np.int64) if seq_lens is None else seq_lens.astype(np.int64)
        ys, finals = [], [[] for _ in states]
        for d in range(self.dirs):
            reverse = self.direction == "reverse" or d == 1
            st = [np.zeros((batch, hidden), x.dtype) if s is None else s[d] for s in states]
            y = np.zeros((seq, batch, hidden), x.dtype)
            xw = project(d, x)
            if seq_lens is None:  # every sequence full: plain time steps, no masks
                for t in range(seq - 1, -1, -1) if reverse else range(seq):
                    st = cell(d, xw[t], st)
                    y[t] = st[0]
                ys.append(y)
                for f, s in zip(finals, st, strict=True):
                    f.append(s)
                continue
            rows = np.arange(batch)
            for step in range(seq):
                # reversed, each batch entry's own sequence runs backwards from its last element
                t = lens - 1 - step if reverse else np.full(batch, step)
                live = (t >= 0) & (t < lens)
                t = np.clip(t, 0, seq - 1)
                new = cell(d, xw[t, rows], st)
                st = [np.where(live[:, None], n, s) for n, s in zip(new, st, strict=True)]
                y[t[live], rows[live]] = st[0][live]
            ys.append(y)
            for f, s in zip(finals, st, strict=True):
                f.append(s)
        y = np.stack(ys, axis=1)  # (seq, dirs, batch, hidden)
        outs = [y] + [np.stack(f) for f in finals]
        if self.layout:
            outs = [y.transpose(2, 0, 1, 3)] + [o.swapaxes(0, 1) for o in outs[1:]]
        return [o.astype(x.dtype) for o in outs]

    def float_projection(self, w: np.ndarray, b: np.ndarray | None, hidden: int):
        """x·Wᵀ + Wb for all steps, the float ops' input product."""
        def project(d: int, x: np.ndarray) -> np.ndarray:
            return x @ w[d].T + (0 if b is None else b[d][: self.gates * hidden])

        return project


def _recurrent_bias(b: np.ndarray | None, d: int, size: int, dtype) -> np.ndarray:
    return np.zeros(size, dtype) if b is None else b[d][size:]


@register("LSTM")
def lstm(node, graph, opts):
    rec = _Recurrence(node, graph, 4, ["Sigmoid", "Tanh", "Tanh"])
    hidden, couple = node.attrs["hidden_size"], node.attrs["input_forget"]

    def run(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        peep = np.zeros((rec.dirs, 3 * hidden), x.dtype) if p is None else p

        def cell(d, xt, st):
            f, g, h = rec.acts[d]
            pi, po, pf = np.split(peep[d], 3)
            gates = xt + st[0] @ r[d].T + _recurrent_bias(b, d, 4 * hidden, x.dtype)
            i_, o_, f_, c_ = np.split(gates, 4, axis=-1)
            i = f(rec.pre(i_ + pi * st[1]))
            fg = 1 - i if couple else f(rec.pre(f_ + pf * st[1]))
            c = fg * st[1] + i * g(rec.pre(c_))
            o = f(rec.pre(o_ + po * c))
            return [o * h(c), c]

        return rec.run(cell, rec.float_projection(w, b, hidden), x, seq_lens, [h0, c0], hidden)

    return run


@register("GRU")
def gru(node, graph, opts):
    rec = _Recurrence(node, graph, 3, ["Sigmoid", "Tanh"])
    hidden, before = node.attrs["hidden_size"], node.attrs["linear_before_reset"]

    def run(x, w, r, b=None, seq_lens=None, h0=None):
        def cell(d, xt, st):
            f, g = rec.acts[d]
            xz, xr, xh = np.split(xt, 3, axis=-1)
            rz, rr, rh = np.split(r[d], 3, axis=0)
            bz, br, bh = np.split(_recurrent_bias(b, d, 3 * hidden, x.dtype), 3)
            z = f(rec.pre(xz + st[0] @ rz.T + bz))
            rg = f(rec.pre(xr + st[0] @ rr.T + br))
            if before:
                hh = g(rec.pre(xh + rg * (st[0] @ rh.T + bh)))
            else:
                hh = g(rec.pre(xh + (rg * st[0]) @ rh.T + bh))
            return [(1 - z) * hh + z * st[0]]

        return rec.run(cell, rec.float_projection(w, b, hidden), x, seq_lens, [h0], hidden)

    return run


@register("RNN")
def rnn(node, graph, opts):
    rec = _Recurrence(node, graph, 1, ["Tanh"])
    hidden = node.attrs["hidden_size"]

    def run(x, w, r, b=None, seq_lens=None, h0=None):
        def cell(d, xt, st):
            return [rec.acts[d][0](rec.pre(xt + st[0] @ r[d].T + _recurrent_bias(b, d, hidden, x.dtype)))]

        return rec.run(cell, rec.float_projection(w, b, hidden), x, seq_lens, [h0], hidden)

    return run


def _per_direction(v: np.ndarray, dirs: int, size: int, what: str, where: str) -> np.ndarray:
    """A (dirs,) per-tensor or (dirs, size) per-channel parameter as (dirs, size)."""
    v = np.asarray(v)
    if v.shape == (dirs,) or v.shape == (dirs, 1):
        return np.repeat(v.reshape(dirs, 1), size, axis=1)
    if v.shape != (dirs, size):
        raise InferenceError(f"{where}: {what} must have shape ({dirs},) or ({dirs}, {size}), got {v.shape}")
    return v


def _activate_f64(fn: Callable[[np.ndarray], np.ndarray], v: np.ndarray) -> np.ndarray:
    """The gate activation evaluated in float64 and rounded once to fp32: a value any libm
    (numpy's, torch's) agrees on, so the quantized LSTM is reproducible bit for bit by
    quant.dynamic_rnn's simulation, whose next step's hidden-state codes depend on it."""
    return fn(v.astype(np.float64)).astype(np.float32)


@register("DynamicQuantizeLSTM", domain=MS_DOMAIN, defaults={"direction": "forward", "input_forget": 0, "layout": 0})
def dynamic_quantize_lstm(node, graph, opts):
    """ONNX Runtime's dynamic int8 LSTM, with ORT's arithmetic except its approximate
    activations: X (all steps) and each step's h_{t-1} are quantized per tensor with
    DynamicQuantizeLinear's formulas; ``xw = fp32(acc_x)·fp32(s_x·s_W)`` and
    ``rh = fp32(acc_h)·fp32(s_h·s_R)`` from exact int32 accumulators; gate pre-activation
    ``((xw + rh) [+ p⊙c]) + (Wb + Rb)``, clip, activation in float64 rounded to fp32,
    ``c = f⊙c_prev + i⊙g``, ``h = o⊙h(c)``.  W (dirs, in, 4H) and R (dirs, H, 4H), iofc gate
    order, are int8 (or uint8 with zero point 128) constants, packed once."""
    rec = _Recurrence(node, graph, 4, ["Sigmoid", "Tanh", "Tanh"])
    hidden, couple, dirs, where = node.attrs["hidden_size"], node.attrs["input_forget"], rec.dirs, rec.where
    consts = {i: graph.const(node.inputs[i]) if i < len(node.inputs) and node.inputs[i] else None
              for i in (1, 2, 8, 9, 10, 11)}
    for i, what in ((1, "W"), (2, "R"), (8, "W_scale"), (9, "W_zero_point"), (10, "R_scale"), (11, "R_zero_point")):
        if consts[i] is None:
            raise InferenceError(f"{where}: {what} must be a constant initializer")
    w, r = consts[1], consts[2]
    if w.ndim != 3 or w.shape[0] != dirs or w.shape[2] != 4 * hidden:
        raise InferenceError(f"{where}: W must be (num_directions={dirs}, input_size, {4 * hidden}), got {w.shape}")
    if r.shape != (dirs, hidden, 4 * hidden):
        raise InferenceError(f"{where}: R must be ({dirs}, {hidden}, {4 * hidden}), got {r.shape}")
    w_scale = _per_direction(consts[8], dirs, 4 * hidden, "W_scale", where).astype(np.float32)
    r_scale = _per_direction(consts[10], dirs, 4 * hidden, "R_scale", where).astype(np.float32)
    w_zp = _per_direction(consts[9], dirs, 4 * hidden, "W_zero_point", where)
    r_zp = _per_direction(consts[11], dirs, 4 * hidden, "R_zero_point", where)
    w_prod = [ConstantInt8Product(centered_weights(w[d], w_zp[d], axis=1, where=where), where) for d in range(dirs)]
    r_prod = [ConstantInt8Product(centered_weights(r[d], r_zp[d], axis=1, where=where), where) for d in range(dirs)]

    def run(x, _w=None, _r=None, b=None, seq_lens=None, h0=None, c0=None, p=None, *_qparams):
        if x.dtype != np.float32:
            raise InferenceError(f"{where}: X must be float32, got {x.dtype}")
        if seq_lens is not None:
            raise InferenceError(f"{where}: sequence_lens is not supported by the quantized LSTM (ORT quantizes "
                                 "X over the longest length only; exported models never carry it)")
        bias = np.zeros((dirs, 4 * hidden), np.float32) if b is None else b[:, : 4 * hidden] + b[:, 4 * hidden :]
        peep = None if p is None else np.split(p, 3, axis=-1)  # ONNX's P order: i, o, f
        quantized: list = []  # X's codes, computed once for both directions

        def project(d: int, xs_: np.ndarray) -> np.ndarray:
            if not quantized:
                quantized.extend(dynamic_quantize(xs_))
            xq, xs, xz = quantized
            return w_prod[d](xq, xz, opts.threads, opts.isa).astype(np.float32) * (xs * w_scale[d])

        def cell(d, xt, st):
            f, g, h = rec.acts[d]
            hq, hs, hz = dynamic_quantize(st[0])
            gates = xt + r_prod[d](hq, hz, opts.threads, opts.isa).astype(np.float32) * (hs * r_scale[d])
            if peep is None:  # i, o, f are adjacent (iofc): one activation call for the three
                pre = rec.pre(gates + bias[d])
                iof = _activate_f64(f, pre[:, : 3 * hidden])
                i, o = iof[:, :hidden], iof[:, hidden : 2 * hidden]
                fg = np.float32(1) - i if couple else iof[:, 2 * hidden :]
                c = fg * st[1] + i * _activate_f64(g, pre[:, 3 * hidden :])
                return [o * _activate_f64(h, c), c]
            gi, go, gf, gc = np.split(gates, 4, axis=-1)
            bi, bo, bf, bc = np.split(bias[d], 4)
            gi, gf = gi + peep[0][d] * st[1], gf + peep[2][d] * st[1]  # ORT adds the peepholes before the bias
            i = _activate_f64(f, rec.pre(gi + bi))
            fg = np.float32(1) - i if couple else _activate_f64(f, rec.pre(gf + bf))
            c = fg * st[1] + i * _activate_f64(g, rec.pre(gc + bc))
            o = _activate_f64(f, rec.pre((go + peep[1][d] * c) + bo))
            return [o * _activate_f64(h, c), c]

        return rec.run(cell, project, x, None, [h0, c0], hidden)

    return run
