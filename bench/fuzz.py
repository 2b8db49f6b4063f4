"""Seeded, bounded fuzzing of the runtime's door: mutated ONNX files through
``runtime.InferenceSession(bytes)`` and ``.run``.

    python bench/fuzz.py --n 30000            # the table BENCHMARKS.md records
    python bench/fuzz.py --case 1234          # replay one mutant in this process, with its traceback

Five seed models built here with onnx.helper (no torch): fp32, QDQ, QOperator, a
residual QDQ model and an fp32 model of many op kinds (Resize, pools, Softmax, Transpose,
LayerNormalization, ReduceMean, Slice, Concat, Gather, MatMul).  Each mutant is a pure
function of (seed, index): 1-3 structural mutations (dims, element types, attributes,
scales and zero points, initializer data, wiring, opsets, op types) or bit flips or a
truncation of the serialized bytes.

The cases run in a loop inside one worker process (no subprocess per case) whose address
space is capped with ``resource.setrlimit(RLIMIT_AS)``; the parent waits at most
``--timeout`` seconds per case and restarts the worker after a crash or a hang.  Outcomes:

- ``ok``: loaded and ran; ``named``: an InferenceError (the runtime's named error);
- ``unnamed``: any other exception (a bug: the door let something through);
- ``unbounded``: a MemoryError anywhere, named or not (an allocation the limit should have
  refused before it was attempted);
- ``crash``: the worker died (signal); ``hang``: no answer within the timeout.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

BAD = ("unnamed", "unbounded", "crash", "hang")
SEED_NAMES = ("fp32", "qdq", "qoperator", "residual_qdq", "mixed_fp32")


# --- seed models ------------------------------------------------------------------------------
def seed_models() -> dict[str, bytes]:
    """The seed models as serialized bytes (deterministic weights)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def const(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    def model(nodes, inputs, outputs, inits, ms=False):
        graph = helper.make_graph(nodes, "seed", inputs, outputs, inits)
        opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
        return helper.make_model(graph, ir_version=8, opset_imports=opsets).SerializeToString()

    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(4).astype(np.float32) * 0.1
    fc = rng.standard_normal((10, 64)).astype(np.float32) * 0.1
    fp32 = model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Flatten", ["p"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1),
        ],
        [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [const("w", w), const("b", b), const("fc", fc), const("fcb", np.zeros(10, np.float32))],
    )

    ws = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    wq = np.clip(np.rint(w / ws[:, None, None, None]), -127, 127).astype(np.int8)
    xs, ys = np.float32(0.02), np.float32(0.03)
    bq = np.rint(b / (xs * ws)).astype(np.int32)
    qparams = [const("xs", xs), const("xz", np.uint8(128)), const("ys", ys), const("yz", np.uint8(0)),
               const("wq", wq), const("ws", ws), const("wz", np.zeros(4, np.int8)), const("bq", bq),
               const("bs", (xs * ws).astype(np.float32)), const("bz", np.zeros(4, np.int32))]

    def qdq_conv(inp, out, tag, wname="wq", sname="ws"):
        return [
            helper.make_node("DequantizeLinear", [wname, sname, "wz"], [f"wf{tag}"], name=f"dqw{tag}", axis=0),
            helper.make_node("DequantizeLinear", ["bq", "bs", "bz"], [f"bf{tag}"], name=f"dqb{tag}", axis=0),
            helper.make_node("Conv", [inp, f"wf{tag}", f"bf{tag}"], [f"c{tag}"], name=f"conv{tag}",
                             pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{tag}"], [f"r{tag}"], name=f"relu{tag}"),
            helper.make_node("QuantizeLinear", [f"r{tag}", "ys", "yz"], [f"rq{tag}"], name=f"q{tag}"),
            helper.make_node("DequantizeLinear", [f"rq{tag}", "ys", "yz"], [out], name=f"dq{tag}"),
        ]

    head = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"], name="dqx")]
    qdq = model(
        head + qdq_conv("xf", "a", "1") + [
            helper.make_node("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("QuantizeLinear", ["p", "ys", "yz"], ["pq"], name="qp"),
            helper.make_node("DequantizeLinear", ["pq", "ys", "yz"], ["y"], name="dqp"),
        ],
        [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 4, 4])], qparams,
    )

    w2 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    ws2 = (np.abs(w2).reshape(4, -1).max(1) / 127).astype(np.float32)
    w2q = np.clip(np.rint(w2 / ws2[:, None, None, None]), -127, 127).astype(np.int8)
    residual = model(
        head + qdq_conv("xf", "a", "1") + qdq_conv("a", "b2", "2", "w2q", "ws2") + [
            helper.make_node("Add", ["a", "b2"], ["s"], name="add"),
            helper.make_node("QuantizeLinear", ["s", "ys", "yz"], ["sq"], name="qs"),
            helper.make_node("DequantizeLinear", ["sq", "ys", "yz"], ["y"], name="dqs"),
        ],
        [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
        qparams + [const("w2q", w2q), const("ws2", ws2)],
    )

    fcs = (np.abs(fc).max() / 127).astype(np.float32)
    fcq = np.clip(np.rint(fc.T / fcs), -127, 127).astype(np.int8)
    qoperator = model(
        [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
            helper.make_node("QLinearConv", ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz", "bq"], ["cq"],
                             name="qconv", pads=[1, 1, 1, 1]),
            helper.make_node("MaxPool", ["cq"], ["pq"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Reshape", ["pq", "shape"], ["fq"], name="flat"),
            helper.make_node("QLinearAdd", ["fq", "ys", "yz", "fq", "ys", "yz", "ys", "yz"], ["aq"], name="qadd",
                             domain="com.microsoft"),
            helper.make_node("QLinearMatMul", ["aq", "ys", "yz", "fcq", "fcs", "fcz", "ys", "yz"], ["mq"],
                             name="qfc"),
            helper.make_node("DequantizeLinear", ["mq", "ys", "yz"], ["y"], name="dqy"),
        ],
        [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        qparams + [const("shape", np.array([-1, 64], np.int64)), const("fcq", fcq), const("fcs", fcs),
                   const("fcz", np.int8(0))],
        ms=True,
    )
    i64 = np.int64
    mixed = model(
        [
            helper.make_node("Resize", ["x", "", "scales"], ["up"], name="resize", mode="nearest"),
            helper.make_node("AveragePool", ["up"], ["pool"], name="avg", kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("Softmax", ["pool"], ["soft"], name="softmax", axis=1),
            helper.make_node("Transpose", ["soft"], ["nhwc"], name="transpose", perm=[0, 2, 3, 1]),
            helper.make_node("LayerNormalization", ["nhwc", "gamma", "beta"], ["ln"], name="layernorm", axis=-1),
            helper.make_node("ReduceMean", ["ln"], ["mean"], name="mean", axes=[2], keepdims=0),
            helper.make_node("Slice", ["mean", "starts", "ends", "slice_axes"], ["part"], name="slice"),
            helper.make_node("Concat", ["part", "part"], ["both"], name="concat", axis=1),
            helper.make_node("Gather", ["both", "idx"], ["picked"], name="gather", axis=2),
            helper.make_node("Flatten", ["picked"], ["flat"], name="flatten"),
            helper.make_node("MatMul", ["flat", "proj"], ["logits"], name="matmul"),
            helper.make_node("Sigmoid", ["logits"], ["y"], name="sigmoid"),
        ],
        [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [const("scales", np.array([1, 1, 2, 2], np.float32)), const("gamma", np.ones(3, np.float32)),
         const("beta", np.zeros(3, np.float32)), const("starts", np.array([0], i64)),
         const("ends", np.array([4], i64)), const("slice_axes", np.array([1], i64)),
         const("idx", np.array([0, 2], i64)), const("proj", rng.standard_normal((16, 5)).astype(np.float32))],
    )
    return {"fp32": fp32, "qdq": qdq, "qoperator": qoperator, "residual_qdq": residual, "mixed_fp32": mixed}


# --- mutations --------------------------------------------------------------------------------
_EXTREME_INTS = (0, 1, -1, 2, 3, 7, -7, 255, 256, 2**15, 2**31 - 1, 2**31, -(2**31), 2**32, 2**40, 2**62, -(2**63))
_EXTREME_FLOATS = (0.0, -0.0, -1.0, 1e-45, 1e-38, 1e38, 3.4e38, float("inf"), float("-inf"), float("nan"), 1e-3)


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _mutate_proto(model, rng) -> str:
    """One structural mutation in place; returns its name."""
    from onnx import AttributeProto, TensorProto, helper

    g = model.graph
    names = sorted({t for n in g.node for t in [*n.input, *n.output] if t} | {t.name for t in g.initializer})
    kind = _pick(rng, ("dims", "dtype", "attribute", "qparam", "initializer", "wiring", "opset", "op_type",
                       "graph_io", "node", "inflate"))
    if kind == "dims":
        target = _pick(rng, ["init", "io"])
        if target == "init" and g.initializer:
            t = _pick(rng, g.initializer)
            if t.dims and rng.random() < 0.7:
                t.dims[int(rng.integers(len(t.dims)))] = int(_pick(rng, _EXTREME_INTS))
            else:
                t.dims.append(int(_pick(rng, _EXTREME_INTS)))
        else:
            v = _pick(rng, [*g.input, *g.output])
            dims = v.type.tensor_type.shape.dim
            if dims and rng.random() < 0.8:
                d = dims[int(rng.integers(len(dims)))]
                d.dim_value = int(_pick(rng, (0, 1, 2, 5, 64, 2**20, 2**31, 2**40, 2**62)))
            else:
                dims.add().dim_value = int(_pick(rng, (1, 2, 3)))
    elif kind == "dtype":
        if g.initializer and rng.random() < 0.6:
            _pick(rng, g.initializer).data_type = int(rng.integers(0, 26))
        else:
            _pick(rng, [*g.input, *g.output]).type.tensor_type.elem_type = int(rng.integers(0, 26))
    elif kind == "attribute":
        node = _pick(rng, g.node)
        if node.attribute and rng.random() < 0.8:
            a = _pick(rng, node.attribute)
            action = _pick(rng, ("value", "delete", "retype"))
            if action == "delete":
                node.attribute.remove(a)
            elif action == "retype":
                a.type = int(_pick(rng, list(AttributeProto.AttributeType.values())))
            elif a.type == AttributeProto.INTS and a.ints:
                if rng.random() < 0.3:
                    a.ints.append(int(_pick(rng, _EXTREME_INTS)))
                else:
                    a.ints[int(rng.integers(len(a.ints)))] = int(_pick(rng, _EXTREME_INTS))
            elif a.type == AttributeProto.INT:
                a.i = int(_pick(rng, _EXTREME_INTS))
            elif a.type == AttributeProto.FLOAT:
                a.f = float(_pick(rng, _EXTREME_FLOATS))
            else:
                a.s = b"SAME_UPPER"
        else:
            attr_name = _pick(rng, ("axis", "kernel_shape", "strides", "pads", "group", "dilations", "auto_pad",
                                    "transA", "transB", "alpha", "perm", "to", "allowzero", "ceil_mode",
                                    "count_include_pad", "keepdims", "noise"))
            value = (_pick(rng, ("SAME_UPPER", "VALID", "SAME_LOWER", "NOTSET", "bogus")) if attr_name == "auto_pad"
                     else [int(_pick(rng, _EXTREME_INTS)) for _ in range(int(rng.integers(0, 5)))]
                     if attr_name in ("kernel_shape", "strides", "pads", "dilations", "perm")
                     else float(_pick(rng, _EXTREME_FLOATS)) if attr_name == "alpha"
                     else int(_pick(rng, _EXTREME_INTS)))
            for a in list(node.attribute):
                if a.name == attr_name:
                    node.attribute.remove(a)
            attr = AttributeProto(name=attr_name)
            if isinstance(value, list):
                attr.type = AttributeProto.INTS
                attr.ints.extend(value)
            else:
                attr.CopyFrom(helper.make_attribute(attr_name, value))
            node.attribute.append(attr)
    elif kind == "qparam":
        scalars = [t for t in g.initializer if len(t.dims) <= 1 and t.data_type in (
            TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32)]
        if scalars:
            t = _pick(rng, scalars)
            import numpy as np
            from onnx import numpy_helper

            arr = numpy_helper.to_array(t).copy()
            if arr.dtype == np.float32:
                arr.reshape(-1)[int(rng.integers(max(arr.size, 1)))] = _pick(rng, _EXTREME_FLOATS) if arr.size else 0
                new = numpy_helper.from_array(arr.astype(np.float32), t.name)
            else:
                choice = _pick(rng, ("value", "dtype", "shape"))
                if choice == "dtype":
                    new = numpy_helper.from_array(arr.astype(_pick(rng, (np.int32, np.uint8, np.int8, np.int64,
                                                                         np.float32, np.uint16))), t.name)
                elif choice == "shape":
                    new = numpy_helper.from_array(np.resize(arr, int(rng.integers(0, 9))), t.name)
                else:
                    info = np.iinfo(arr.dtype)
                    flat = arr.reshape(-1).copy()
                    if flat.size:
                        flat[int(rng.integers(flat.size))] = _pick(rng, (info.min, info.max, 0, 1))
                    new = numpy_helper.from_array(flat.reshape(arr.shape), t.name)
            t.CopyFrom(new)
    elif kind == "initializer":
        if g.initializer:
            t = _pick(rng, g.initializer)
            action = _pick(rng, ("truncate", "extend", "delete", "duplicate", "rename", "typed"))
            if action == "truncate" and t.raw_data:
                t.raw_data = t.raw_data[: int(rng.integers(len(t.raw_data)))]
            elif action == "extend":
                t.raw_data = t.raw_data + bytes(int(rng.integers(1, 64)))
            elif action == "delete":
                g.initializer.remove(t)
            elif action == "duplicate":
                g.initializer.append(t)
            elif action == "rename":
                t.name = _pick(rng, names) if rng.random() < 0.5 else "renamed"
            else:
                raw = t.raw_data
                t.ClearField("raw_data")
                t.float_data.extend([1.0] * (len(raw) // 4 + int(rng.integers(-1, 2))))
    elif kind == "wiring":
        node = _pick(rng, g.node)
        action = _pick(rng, ("input", "output", "cycle", "drop_input", "add_input"))
        if action == "input" and node.input:
            node.input[int(rng.integers(len(node.input)))] = _pick(rng, names + ["", "nowhere"])
        elif action == "output" and node.output:
            node.output[int(rng.integers(len(node.output)))] = _pick(rng, names + [""])
        elif action == "cycle" and node.input:
            later = [t for n in g.node[list(g.node).index(node):] for t in n.output]
            node.input[0] = _pick(rng, later)
        elif action == "drop_input" and node.input:
            del node.input[int(rng.integers(len(node.input)))]
        else:
            node.input.append(_pick(rng, names))
    elif kind == "opset":
        if model.opset_import and rng.random() < 0.8:
            model.opset_import[0].version = int(rng.integers(1, 30))
        else:
            del model.opset_import[:]
    elif kind == "op_type":
        node = _pick(rng, g.node)
        node.op_type = _pick(rng, ("Conv", "QLinearConv", "MaxPool", "AveragePool", "Gemm", "MatMul", "Add",
                                   "Reshape", "Flatten", "Relu", "QuantizeLinear", "DequantizeLinear",
                                   "Concat", "Transpose", "Softmax", "Expand", "ConstantOfShape", "Slice",
                                   "Gather", "Squeeze", "Unsqueeze", "QLinearMatMul", "Cast", "NoSuchOp",
                                   "Resize", "Pad", "Tile", "Range", "OneHot", "ConvTranspose", "LSTM", "TopK",
                                   "Einsum", "Split", "ScatterND", "NonZero", "CumSum", "LayerNormalization"))
        if rng.random() < 0.2:
            node.domain = _pick(rng, ("com.microsoft", "ai.onnx", "bogus"))
    elif kind == "graph_io":
        action = _pick(rng, ("drop_output", "bogus_output", "drop_input", "input_is_init"))
        if action == "drop_output" and g.output:
            del g.output[0]
        elif action == "bogus_output":
            g.output.append(helper.make_tensor_value_info(_pick(rng, names + ["nowhere"]), TensorProto.FLOAT, [1]))
        elif action == "drop_input" and g.input:
            del g.input[0]
        elif g.initializer:
            t = _pick(rng, g.initializer)
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    elif kind == "inflate":
        _inflate(g, rng)
    else:  # node
        action = _pick(rng, ("delete", "duplicate", "swap"))
        if action == "delete" and len(g.node) > 1:
            del g.node[int(rng.integers(len(g.node)))]
        elif action == "duplicate":
            g.node.append(_pick(rng, g.node))
        elif len(g.node) > 1:
            i, j = (int(v) for v in rng.choice(len(g.node), 2, replace=False))
            a, b = type(g.node[i])(), type(g.node[j])()
            a.CopyFrom(g.node[i])
            b.CopyFrom(g.node[j])
            g.node[i].CopyFrom(b)
            g.node[j].CopyFrom(a)
    return kind


_BIG = (2**10, 2**20, 2**31, 2**40, 2**62)


def _inflate(g, rng) -> None:
    """Adds a node whose output size comes from a (hostile) constant: the memory bound's job."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    tag = f"inflate{len(g.node)}"
    big = int(_pick(rng, _BIG))

    def const(name, value):
        g.initializer.append(numpy_helper.from_array(np.asarray(value), f"{tag}_{name}"))
        return f"{tag}_{name}"

    op = _pick(rng, ("ConstantOfShape", "Range", "Tile", "Expand", "Resize", "Pad", "OneHot", "EyeLike", "Upsample"))
    x = g.input[0].name if g.input else "x"
    if op == "ConstantOfShape":
        node = helper.make_node(op, [const("shape", np.array([big, big], np.int64))], [tag])
    elif op == "Range":
        node = helper.make_node(op, [const("a", np.float32(0)), const("b", np.float32(big)), const("d", np.float32(1))],
                                [tag])
    elif op == "Tile":
        node = helper.make_node(op, [x, const("r", np.array([1, 1, big, big], np.int64))], [tag])
    elif op == "Expand":
        node = helper.make_node(op, [x, const("s", np.array([big, 3, 8, 8], np.int64))], [tag])
    elif op in ("Resize", "Upsample"):
        scales = const("s", np.array([1, 1, big, big], np.float32))
        node = helper.make_node(op, [x, "", scales] if op == "Resize" else [x, scales], [tag])
    elif op == "Pad":
        node = helper.make_node(op, [x, const("p", np.array([0, 0, big, big, 0, 0, big, big], np.int64))], [tag])
    elif op == "OneHot":
        node = helper.make_node(op, [const("i", np.array([1, 2], np.int64)), const("d", np.int64(big)),
                                     const("v", np.array([0, 1], np.float32))], [tag])
    else:
        node = helper.make_node(op, [const("m", np.zeros((2, 2), np.float32))], [tag], k=big)
    g.node.append(node)
    g.output.append(helper.make_tensor_value_info(tag, TensorProto.FLOAT, None))


def mutant(seeds: dict[str, bytes], seed: int, index: int) -> tuple[str, str, bytes]:
    """(seed model name, mutation summary, bytes) of case ``index``: a pure function of its arguments."""
    import numpy as np
    import onnx

    rng = np.random.default_rng([seed, index])
    name = SEED_NAMES[index % len(SEED_NAMES)]
    data = seeds[name]
    roll = rng.random()
    if roll < 0.6:
        model = onnx.ModelProto()
        model.ParseFromString(data)
        kinds = []
        for _ in range(int(rng.integers(1, 4))):
            try:
                kinds.append(_mutate_proto(model, rng))
            except Exception:  # noqa: BLE001  (nothing left to mutate, or an earlier mutation broke a helper)
                kinds.append("skip")
        return name, "+".join(kinds), model.SerializeToString()
    buf = bytearray(data)
    if roll < 0.85:
        flips = int(rng.integers(1, 9))
        for _ in range(flips):
            pos = int(rng.integers(len(buf)))
            buf[pos] ^= 1 << int(rng.integers(8))
        return name, f"bitflip x{flips}", bytes(buf)
    cut = int(rng.integers(len(buf)))
    return name, f"truncate at {cut}", bytes(buf[:cut])


# --- one case ---------------------------------------------------------------------------------
class _HugeInput(Exception):
    """The session accepted an input it declares larger than the memory limit."""


def _feeds(session, rng, limit: int):
    import numpy as np

    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
             "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
    feeds = {}
    for info in session.get_inputs():
        shape = [d if isinstance(d, int) and d >= 0 else 1 for d in info.shape]
        dtype = types.get(info.type, np.float32)
        if np.prod(shape, dtype=np.float64) * np.dtype(dtype).itemsize > limit:
            raise _HugeInput(f"input {info.name!r} declared {info.shape}")
        feeds[info.name] = (rng.standard_normal(shape) * 3).astype(dtype)
    return feeds


def _is_memory(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, MemoryError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def run_case(seeds: dict[str, bytes], seed: int, index: int, memory_limit: int) -> tuple[str, str]:
    """(outcome, detail) of one case, in this process."""
    import numpy as np

    from runtime import InferenceError, InferenceSession

    name, what, data = mutant(seeds, seed, index)
    stage = "load"
    try:
        session = InferenceSession(data, threads=1, memory_limit=memory_limit)
        stage = "feed"
        feeds = _feeds(session, np.random.default_rng(index), memory_limit)
        stage = "run"
        session.run(None, feeds)
        return "ok", ""
    except _HugeInput as exc:
        return "unbounded", f"{name} {what}: accepted {exc}"
    except InferenceError as exc:
        if _is_memory(exc):
            return "unbounded", f"{name} {what}: {stage}: {exc}"[:300]
        return "named", stage
    except Exception as exc:  # noqa: BLE001  (counting them is the point)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{os.path.relpath(frame.filename)}:{frame.lineno}"
        kind = "unbounded" if _is_memory(exc) else "unnamed"
        return kind, f"{name} {what}: {stage}: {type(exc).__name__} at {where}: {exc}"[:300]


def _worker(conn, seed: int, address_space: int, memory_limit: int) -> None:
    """The loop inside the bounded worker: read an index, answer (index, outcome, detail)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    seeds = seed_models()
    import runtime  # noqa: F401  (imports are not part of any case's time)

    conn.send("ready")
    while True:
        index = conn.recv()
        if index is None:
            return
        conn.send((index, *run_case(seeds, seed, index, memory_limit)))


@dataclass
class Report:
    """Counts per outcome and seed model, and the first few bad cases of each kind."""

    n: int
    seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)
    by_seed: dict[str, Counter] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, index: int, outcome: str, detail: str) -> None:
        self.counts[outcome] += 1
        self.by_seed.setdefault(SEED_NAMES[index % len(SEED_NAMES)], Counter())[outcome] += 1
        if outcome in BAD and len(self.examples.setdefault(outcome, [])) < 8:
            self.examples[outcome].append(f"case {index}: {detail}")

    @property
    def bad(self) -> int:
        return sum(self.counts[k] for k in BAD)

    def table(self) -> str:
        cols = ("ok", "named", *BAD)
        lines = ["| seed model | cases | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for name in SEED_NAMES:
            c = self.by_seed.get(name, Counter())
            lines.append(f"| {name} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + " |")
        lines.append(f"| **all** | {self.n} | " + " | ".join(f"**{self.counts[k]}**" for k in cols) + " |")
        rate = self.n / self.seconds if self.seconds else 0.0
        lines.append(f"\n{self.n} cases in {self.seconds:.0f} s ({rate:.0f} cases/s)")
        for kind, items in self.examples.items():
            lines.append(f"\n{kind}:\n" + "\n".join(f"- {e}" for e in items))
        return "\n".join(lines)


class _Bounded:
    """The parent's handle on one worker: start, ask with a timeout, restart after a crash or hang."""

    def __init__(self, seed: int, address_space: int, memory_limit: int) -> None:
        self.args = (seed, address_space, memory_limit)
        self.ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(600) or self.conn.recv() != "ready":
            raise RuntimeError("fuzz worker did not start")

    def ask(self, index: int, timeout: float) -> tuple[str, str]:
        self.conn.send(index)
        if self.conn.poll(timeout):
            try:
                _, outcome, detail = self.conn.recv()
                return outcome, detail
            except (EOFError, ConnectionError):
                pass
        else:
            if self.proc.is_alive():
                self.restart()
                return "hang", f"no answer within {timeout} s"
        self.proc.join(1)
        code = self.proc.exitcode
        self.restart()
        return "crash", f"worker exit code {code}"

    def restart(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self._start()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def campaign(n: int, seed: int = 0, timeout: float = 5.0, address_space: int = 4 << 30,
             memory_limit: int = 64 << 20, start: int = 0, progress: bool = False) -> Report:
    """Run cases start..start+n-1 in one bounded worker; the warm-up (imports) is not timed per case."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    report = Report(n)
    worker = _Bounded(seed, address_space, memory_limit)
    try:
        t0 = time.perf_counter()
        for i in range(start, start + n):
            report.add(i, *worker.ask(i, timeout))
            if progress and (i - start + 1) % 1000 == 0:
                print(f"{i - start + 1}/{n} {dict(report.counts)}", file=sys.stderr, flush=True)
        report.seconds = time.perf_counter() - t0
    finally:
        worker.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of mutants (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--address-space", type=int, default=4 << 30, help="worker RLIMIT_AS in bytes (4 GiB)")
    parser.add_argument("--memory-limit", type=int, default=64 << 20,
                        help="the session's memory_limit in bytes (64 MiB: large legitimate work is not a hang)")
    parser.add_argument("--case", type=int, help="replay one case here and print its traceback")
    args = parser.parse_args(argv)
    if args.case is not None:
        name, what, _ = mutant(seed_models(), args.seed, args.case)
        print(f"case {args.case}: {name} {what}")
        from runtime import InferenceSession

        session = InferenceSession(mutant(seed_models(), args.seed, args.case)[2], threads=1,
                                   memory_limit=args.memory_limit)
        import numpy as np

        feeds = _feeds(session, np.random.default_rng(args.case), args.memory_limit)
        print([o.shape for o in session.run(None, feeds)])
        return 0
    report = campaign(args.n, args.seed, args.timeout, args.address_space, args.memory_limit, args.start,
                      progress=True)
    print(report.table())
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
