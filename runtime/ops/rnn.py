"""LSTM, GRU and RNN (fp32 numpy, one matrix product per step), forward, reverse or
bidirectional, with sequence_lens, initial states, peepholes, clip, layout and the
activation functions ONNX lists."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.errors import InferenceError
from runtime.ops.registry import register


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

    def run(self, cell, x, w, r, b, seq_lens, states: list[np.ndarray | None], hidden: int):
        if self.layout:
            x = x.swapaxes(0, 1)
            states = [None if s is None else s.swapaxes(0, 1) for s in states]
        seq, batch = x.shape[:2]
        lens = np.full(batch, seq, np.int64) if seq_lens is None else seq_lens.astype(np.int64)
        ys, finals = [], [[] for _ in states]
        for d in range(self.dirs):
            reverse = self.direction == "reverse" or d == 1
            wb = np.zeros(2 * self.gates * hidden, x.dtype) if b is None else b[d]
            st = [np.zeros((batch, hidden), x.dtype) if s is None else s[d] for s in states]
            y = np.zeros((seq, batch, hidden), x.dtype)
            xw = x @ w[d].T + wb[: self.gates * hidden]
            rows = np.arange(batch)
            for step in range(seq):
                # reversed, each batch entry's own sequence runs backwards from its last element
                t = lens - 1 - step if reverse else np.full(batch, step)
                live = (t >= 0) & (t < lens)
                t = np.clip(t, 0, seq - 1)
                new = cell(d, xw[t, rows], st, r[d], wb[self.gates * hidden :])
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


@register("LSTM")
def lstm(node, graph, opts):
    rec = _Recurrence(node, graph, 4, ["Sigmoid", "Tanh", "Tanh"])
    hidden, couple = node.attrs["hidden_size"], node.attrs["input_forget"]

    def run(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        peep = np.zeros((rec.dirs, 3 * hidden), x.dtype) if p is None else p

        def cell(d, xt, st, rd, rb):
            f, g, h = rec.acts[d]
            pi, po, pf = np.split(peep[d], 3)
            gates = xt + st[0] @ rd.T + rb
            i_, o_, f_, c_ = np.split(gates, 4, axis=-1)
            i = f(rec.pre(i_ + pi * st[1]))
            fg = 1 - i if couple else f(rec.pre(f_ + pf * st[1]))
            c = fg * st[1] + i * g(rec.pre(c_))
            o = f(rec.pre(o_ + po * c))
            return [o * h(c), c]

        return rec.run(cell, x, w, r, b, seq_lens, [h0, c0], hidden)

    return run


@register("GRU")
def gru(node, graph, opts):
    rec = _Recurrence(node, graph, 3, ["Sigmoid", "Tanh"])
    hidden, before = node.attrs["hidden_size"], node.attrs["linear_before_reset"]

    def run(x, w, r, b=None, seq_lens=None, h0=None):
        def cell(d, xt, st, rd, rb):
            f, g = rec.acts[d]
            xz, xr, xh = np.split(xt, 3, axis=-1)
            rz, rr, rh = np.split(rd, 3, axis=0)
            bz, br, bh = np.split(rb, 3)
            z = f(rec.pre(xz + st[0] @ rz.T + bz))
            rg = f(rec.pre(xr + st[0] @ rr.T + br))
            if before:
                hh = g(rec.pre(xh + rg * (st[0] @ rh.T + bh)))
            else:
                hh = g(rec.pre(xh + (rg * st[0]) @ rh.T + bh))
            return [(1 - z) * hh + z * st[0]]

        return rec.run(cell, x, w, r, b, seq_lens, [h0], hidden)

    return run


@register("RNN")
def rnn(node, graph, opts):
    rec = _Recurrence(node, graph, 1, ["Tanh"])
    hidden = node.attrs["hidden_size"]

    def run(x, w, r, b=None, seq_lens=None, h0=None):
        def cell(d, xt, st, rd, rb):
            return [rec.acts[d][0](rec.pre(xt + st[0] @ rd.T + rb))]

        return rec.run(cell, x, w, r, b, seq_lens, [h0], hidden)

    return run
