"""Other tools' ONNX files through our runtime: torchvision classification models exported to
fp32 by torch.onnx, then quantized by ONNX Runtime's ``quantize_static`` (QDQ and QOperator,
uint8 and int8 activations, int8 per-channel weights).

For each file: our runtime must load and run it.  fp32: max |ours - ORT| relative to max |ORT|
(must stay under 1e-4).  int8: the output (a DequantizeLinear of codes) is compared in output
quantization steps with ``onnx.reference.ReferenceEvaluator`` (the specification's arithmetic:
dequantize, compute in float, quantize; QDQ files only, since the reference has no kernels for
the com.microsoft ops QOperator files use) and with ONNX Runtime, which is exact where the
probe of ``export.validate`` says so.

Where the roundings differ: our runtime (like ORT) folds DQ -> Conv -> Q into one integer op and
requantizes the exact int32 sum with one fp32 multiplier, fp32(fp32(s_x*s_w)/s_y); the reference
convolves dequantized float32 values (float accumulation, rounded at every add) and divides by
s_y.  Values whose scaled sum lies within float rounding of a .5 boundary round differently:
one step, rarely (layer-wise: under 1 in 10^4 codes), then propagated through the layers that
follow, which is why end-to-end outputs differ more.  ORT folds QDQ files with uint8
activations into integer kernels as we do (equal to ours), but runs those with int8 activations
as float DQ -> op -> Q on this CPU (equal to the reference).

Weights are random (seed 0, no download), inputs standard normal; BatchNorm keeps its default
statistics.  Prints a markdown table.

    python bench/onnx_files.py [--models resnet18,mobilenet_v2] [--size 64] [--max-params 90e6] [--no-reference]
                               [--perturb float64,reversed|none] [--results rows.jsonl] [--table [--compact]]

With ``--results`` the run is resumable: each model's row is appended to the file as one JSON
line as soon as it is measured, and models already there (with the same reference setting) are
skipped; ``--table`` prints the markdown table of the file's rows without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import onnx.version_converter
from onnx.reference.op_run import OpRun
from onnx.reference.ops import op_conv, op_dequantize_linear, op_gemm, op_matmul

import runtime

FORMATS = [("qdq", "u8"), ("qdq", "s8"), ("qoperator", "u8"), ("qoperator", "s8")]
MIN_SIZE = {"inception_v3": 75, "googlenet": 32, "alexnet": 224, "vit_b_16": 224, "vit_b_32": 224, "maxvit_t": 224}


def classification_models(max_params: float) -> list[str]:
    """torchvision's classification model names whose parameter count is at most max_params."""
    import torch
    import torchvision

    names = []
    for name in torchvision.models.list_models(module=torchvision.models):
        try:  # the meta device skips the weights' memory; a few constructors need real tensors
            with torch.device("meta"):
                model = torchvision.models.get_model(name, weights=None)
        except NotImplementedError:
            model = torchvision.models.get_model(name, weights=None)
        if sum(p.numel() for p in model.parameters()) <= max_params:
            names.append(name)
    return names


def export_fp32(name: str, path: Path, size: int) -> int:
    """torch.onnx (TorchScript exporter, opset 17) of the model with random weights, then ORT's
    pre-processing (shape inference, BN folding) that quantize_static expects; returns the
    model's parameter count."""
    import torch
    import torchvision
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    torch.onnx.export(
        model,
        torch.randn(1, 3, size, size),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    quant_pre_process(str(path), str(path), skip_symbolic_shape=True)
    return sum(p.numel() for p in model.parameters())


def quantize(fp32: Path, out: Path, size: int, fmt: str, act: str) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.items = iter([{"input": rng.standard_normal((1, 3, size, size), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(
        str(fp32),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8 if act == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def reference_run(path: Path, x: np.ndarray) -> np.ndarray:
    """onnx.reference on the file converted to opset 21 (the reference implements Q/DQ from
    opset 19 on; the 8-bit arithmetic is the same in every version)."""
    model = onnx.version_converter.convert_version(onnx.load(str(path)), 21)
    return onnx.reference.ReferenceEvaluator(model).run(None, {"input": x})[0]


PERTURBATIONS = ("float64", "reversed", "sequential", "exact")


def _conv_pads(x_shape, extent, strides, pads, auto_pad) -> tuple[list[int], list[int]]:
    """Conv's padding before and after each spatial axis, auto_pad resolved as the spec says."""
    nd = len(extent)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        need = [
            max(0, (-(-x_shape[2 + i] // strides[i]) - 1) * strides[i] + extent[i] - x_shape[2 + i]) for i in range(nd)
        ]
        head = [(k + 1) // 2 if auto_pad == "SAME_LOWER" else k // 2 for k in need]
        return head, [k - h for k, h in zip(need, head, strict=True)]
    if auto_pad == "VALID" or not pads:
        return [0] * nd, [0] * nd
    return list(pads[:nd]), list(pads[nd:])


def sequential_conv(x, w, b, auto_pad, dilations, group, kernel_shape, pads, strides) -> np.ndarray:
    """Conv in float32 with each output's sum taken strictly in the order the formula is
    written (input channel, then kernel position, row-major), every product rounded to float32
    before it is added (no FMA), the bias last: a textbook loop, not a BLAS blocking."""
    nd = x.ndim - 2
    ks = list(kernel_shape or w.shape[2:])
    dil, st = list(dilations or [1] * nd), list(strides or [1] * nd)
    extent = [(k - 1) * d + 1 for k, d in zip(ks, dil, strict=True)]
    head, tail = _conv_pads(x.shape, extent, st, pads, auto_pad)
    xp = np.pad(x, [(0, 0), (0, 0), *zip(head, tail, strict=True)])
    out = [(xp.shape[2 + i] - extent[i]) // st[i] + 1 for i in range(nd)]
    g = group or 1
    n, cg, m = x.shape[0], w.shape[1], w.shape[0] // g
    xg, wg = xp.reshape(n, g, cg, *xp.shape[2:]), w.reshape(g, m, cg, *ks)
    y = np.zeros((n, g, m, *out), np.float32)
    for c in range(cg):
        for at in np.ndindex(*ks):
            window = tuple(slice(at[i] * dil[i], at[i] * dil[i] + st[i] * (out[i] - 1) + 1, st[i]) for i in range(nd))
            y += (
                wg[(slice(None), slice(None), c, *at)].reshape(1, g, m, *[1] * nd)
                * xg[(slice(None), slice(None), c, *window)][:, :, None]
            )
    y = y.reshape(n, g * m, *out)
    return y if b is None else y + b.reshape(1, -1, *[1] * nd)


def sequential_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy's matmul (broadcast batches, 1-D operands) in float32 with K summed strictly in
    order, each product rounded before it is added."""
    a2, b2 = (a[None] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    y = np.zeros((*batch, a2.shape[-2], b2.shape[-1]), np.float32)
    for k in range(a2.shape[-1]):
        y += a2[..., :, k : k + 1] * b2[..., k : k + 1, :]
    y = y[..., 0, :] if a.ndim == 1 else y
    return y[..., 0] if b.ndim == 1 else y


def perturbed_ops(kind: str) -> list[type[OpRun]]:
    """onnx.reference's Conv, Gemm and MatMul with another summation order that the
    specification equally allows (it fixes the sum, not the order or the precision of the
    float32 additions): ``float64`` accumulates in float64 and rounds the result to float32
    once (more accurate than any float32 order); ``reversed`` sums K in the opposite order
    (input channels reversed within each group for Conv, a no-op for depthwise Convs; K reversed
    for Gemm/MatMul), still in float32 through the same numpy/BLAS product; ``sequential`` is
    the textbook float32 loop (``sequential_conv``, ``sequential_matmul``), independent of the
    BLAS, whose blocked kernels keep several partial sums.  A QDQ file runs these ops in float
    between DequantizeLinear and QuantizeLinear, so the reference with these ops is the same
    specification computed a second, equally conformant way.  ``exact`` goes further and keeps
    the whole float stretch between DequantizeLinear and QuantizeLinear in float64
    (``float64_ops``): the real-number value the QDQ format stands for, rounded once by each
    QuantizeLinear, which is what a runtime that fuses DQ -> op -> Q into integer arithmetic
    (ORT's integer kernels, ours) approximates instead of the float32 intermediates."""
    if kind not in PERTURBATIONS:
        raise ValueError(f"perturbation {kind!r}: expected one of {PERTURBATIONS}")
    if kind == "exact":
        return float64_ops()
    wide, sequential = kind == "float64", kind == "sequential"

    def k_reversed(a: np.ndarray, axis: int) -> np.ndarray:
        return np.flip(a, axis) if kind == "reversed" else a

    def widen(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a.astype(np.float64) if wide else a

    def product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sequential_matmul(a, b) if sequential else op_matmul.numpy_matmul(a, b)

    class Conv(op_conv.Conv):
        op_domain = ""

        def _run(
            self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None, strides=None
        ):  # noqa: N803
            dtype = X.dtype
            args = (auto_pad, dilations, group or 1, kernel_shape, pads, strides)
            if sequential:
                return (sequential_conv(X, W, B, *args).astype(dtype),)
            if kind == "reversed":  # channel c of group g read as C/g - 1 - c, with the weights to match
                g = group or 1
                X = np.ascontiguousarray(np.flip(X.reshape(X.shape[0], g, -1, *X.shape[2:]), 2).reshape(X.shape))
                W = np.ascontiguousarray(np.flip(W, 1))
            return (op_conv._conv_implementation(widen(X), widen(W), widen(B), *args).astype(dtype),)

    class Gemm(op_gemm.Gemm_7):
        op_domain = ""

        def _run(self, a, b, c=None, alpha=None, beta=None, transA=None, transB=None):  # noqa: N803
            dtype = a.dtype
            a = np.ascontiguousarray(k_reversed(a.T if transA else a, 1))
            b = np.ascontiguousarray(k_reversed(b.T if transB else b, 0))
            y = product(widen(a), widen(b)) * (1.0 if alpha is None else alpha)  # as the reference: A'B' * alpha
            if c is not None and beta != 0:
                y = y + widen(c) * (1.0 if beta is None else beta)
            return (y.astype(dtype),)

    class MatMul(op_matmul.MatMul):
        op_domain = ""

        def _run(self, a, b):
            dtype = a.dtype
            a = np.ascontiguousarray(k_reversed(a, -1))
            b = np.ascontiguousarray(k_reversed(b, -2 if b.ndim > 1 else 0))
            return (product(widen(a), widen(b)).astype(dtype),)

    return [Conv, Gemm, MatMul]


def float64_ops() -> list[type[OpRun]]:
    """onnx.reference's DequantizeLinear with a float64 output, so that everything between it and
    the QuantizeLinear runs in float64 (products of two dequantized values exact to 2^-53, sums
    with 10^-16 relative error): a stand-in for the exact real-number value of a layer, which the
    float32 reference and our integer requantization (one fp32 multiplier) both approximate.
    At a code where the two differ, it says which one rounded the exact value."""

    class DequantizeLinear(op_dequantize_linear.DequantizeLinear_21):
        op_domain = ""

        def _run(self, x, x_scale, x_zero_point=None, axis: int = 1, block_size: int = 0, output_dtype=None):
            # output_dtype (opset 23's attribute, filled in by the evaluator) is float64 here by design
            return super()._run(x, x_scale.astype(np.float64), x_zero_point, axis=axis, block_size=block_size)

    return [DequantizeLinear]


class QdqFile:
    """A QDQ file's quantized tensors and, for each, its layer: the DequantizeLinear nodes, the
    op and the QuantizeLinear that produce it, as a graph of its own."""

    def __init__(self, path: Path) -> None:
        self.model = onnx.load(str(path))
        g = self.model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.producers = {o: n for n in g.node for o in n.output}
        self.qnodes = [n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in self.inits]
        self.names = [q.output[0] for q in self.qnodes]
        self.opset = next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))

    def elem(self, q) -> int:
        inits = self.inits
        return inits[q.input[2]].data_type if len(q.input) > 2 and q.input[2] in inits else onnx.TensorProto.UINT8

    def probe(self, opset: int | None = None) -> onnx.ModelProto:
        """The model with every quantized tensor as an output as well (opset converted when given)."""
        probe = onnx.ModelProto()
        probe.CopyFrom(self.model)
        for q in self.qnodes:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(q.output[0], self.elem(q), None))
        return onnx.version_converter.convert_version(probe, opset) if opset else probe

    def layer(
        self, q, codes: dict[str, np.ndarray], opset: int = 21
    ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]] | None:
        """q's layer fed with codes of its quantized inputs, or None when the op before q reads
        something other than DequantizeLinear outputs and constants (ORT's QDQ files put a DQ
        before every quantized op's input) or q quantizes a graph input."""
        op = self.producers.get(q.input[0])
        if op is None or op.op_type in ("DequantizeLinear", "QuantizeLinear"):
            return None
        dqs, feeds = [], {}
        for name in (i for i in op.input if i and i not in self.inits):
            dq = self.producers.get(name)
            known = dq is not None and (dq.input[0] in self.inits or dq.input[0] in codes)
            if not known or dq.op_type != "DequantizeLinear":
                return None
            if dq not in dqs:  # an op may read one tensor twice (BatchNormalization's mean and bias)
                dqs.append(dq)
            if dq.input[0] in codes:
                feeds[dq.input[0]] = codes[dq.input[0]]
        used = {i for n in [*dqs, op, q] for i in n.input}
        graph = onnx.helper.make_graph(
            [*dqs, op, q],
            "layer",
            [
                onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                for n, v in feeds.items()
            ],
            [onnx.helper.make_tensor_value_info(q.output[0], self.elem(q), None)],
            [t for n, t in self.inits.items() if n in used],
        )
        return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)]), feeds


def layerwise(path: Path, x: np.ndarray) -> tuple[Agreement, int, int, int]:
    """Every quantized tensor of a QDQ file, each computed by the reference from *our* codes of
    its inputs (DQ -> op -> Q in isolation), so one layer's rounding does not compound into
    the next: (agreement over all their elements, tensors compared, quantized tensors in all,
    tensors whose reference shape differs from ours and ORT's: onnx.reference sizes some
    ceil_mode pools differently).  A tensor is compared when ``QdqFile.layer`` forms its layer."""
    f = QdqFile(path)
    values = runtime.InferenceSession(f.probe().SerializeToString(), threads=1).run(f.names, {"input": x})
    codes = dict(zip(f.names, values, strict=True))
    equal = total = compared = worst = shapes = 0
    for q in f.qnodes:
        if (made := f.layer(q, codes)) is None:
            continue
        ref = onnx.reference.ReferenceEvaluator(made[0]).run(None, made[1])[0]
        if ref.shape != codes[q.output[0]].shape:
            shapes += 1
            continue
        diff = np.abs(codes[q.output[0]].astype(np.int64) - ref.astype(np.int64))
        equal, total = equal + int((diff == 0).sum()), total + diff.size
        worst, compared = max(worst, int(diff.max(initial=0))), compared + 1
    return Agreement(equal / max(total, 1), worst), compared, len(f.qnodes), shapes


@dataclass
class Forcing:
    """Teacher forcing and the reference's own sensitivity, for one QDQ file."""

    layers: Agreement  # our codes of every compared tensor, each from the reference's input codes
    differing: int  # codes that differ (over all compared tensors)
    codes: int  # codes compared
    sensitivity: Agreement | None  # the reference's output after one layer's differing codes become ours
    changed: int = 0  # codes changed in that layer
    layer: str = ""
    ours_exact: int = -1  # of the differing codes, those where ours equals the layer run in float64
    reference_exact: int = -1  # ... where the reference's does

    def cell(self) -> str:
        forced = f"{self.layers.cell()} ({self.differing} of {self.codes} codes differ"
        if self.differing and self.ours_exact >= 0:
            forced += f"; float64 layer = ours at {self.ours_exact}, = reference at {self.reference_exact}"
        forced += ")"
        if self.sensitivity is None:
            return forced + "; no code differs"
        moved = self.sensitivity.cell()
        return forced + f"; {self.changed} code(s) of {self.layer} changed: reference vs itself {moved}"


def reference_codes(path: Path, x: np.ndarray, perturb: str | None = None) -> dict[str, np.ndarray]:
    """The reference's end-to-end run of a QDQ file (opset 21): its output under the graph
    output's name and the codes of every quantized tensor under theirs; with ``perturb`` its
    Conv/Gemm/MatMul summed another conformant way (``perturbed_ops``)."""
    f = QdqFile(path)
    probe = f.probe(21)
    names = [probe.graph.output[0].name, *f.names]
    evaluator = onnx.reference.ReferenceEvaluator(probe, new_ops=perturbed_ops(perturb) if perturb else None)
    return dict(zip(names, evaluator.run(names, {"input": x}), strict=True))


@dataclass
class SelfCheck:
    """The reference against itself: its end-to-end run with Conv/Gemm/MatMul summed another
    conformant way, compared with its own default run."""

    perturb: str  # which summation order (``PERTURBATIONS``)
    output: Agreement  # its output vs the default run's, in output steps
    tensors: int  # quantized tensors with at least one differing code
    quantized: int  # quantized tensors in all
    first: str = ""  # the first such tensor in graph order
    first_codes: int = 0  # its differing codes
    ours: Agreement | None = None  # our runtime's output vs this perturbed reference's

    def cell(self) -> str:
        vs_ours = f"; ours vs it {self.ours.cell()}" if self.ours else ""
        if not self.tensors:
            return f"{self.output.cell()} (no code differs{vs_ours})"
        first = f"first: {self.first_codes} code(s) of {self.first}"
        return f"{self.output.cell()} ({first}; {self.tensors}/{self.quantized} tensors differ{vs_ours})"
        return f"{self.output.cell()} (first: {self.first_codes} code(s) of {self.first}; {self.tensors}/{self.quantized} tensors differ)"  # noqa: E501


def self_check(
    path: Path,
    x: np.ndarray,
    step: float,
    perturb: str,
    ref: dict[str, np.ndarray] | None = None,
    ours: np.ndarray | None = None,
) -> SelfCheck:
    """How far the specification's own end-to-end result moves when only the summation order of
    its float Conv/Gemm/MatMul changes (``perturbed_ops``): the agreement an exact, conformant
    runtime can be expected to reach with ``onnx.reference`` end to end, to read beside ours.
    ``ours``: our runtime's output on the file, compared with the perturbed reference's too."""
    f = QdqFile(path)
    ref = ref if ref is not None else reference_codes(path, x)
    other = reference_codes(path, x, perturb)
    out = next(iter(ref))
    differing = [(n, int((other[n] != ref[n]).sum())) for n in f.names if other[n].shape == ref[n].shape]
    differing = [(n, c) for n, c in differing if c]
    first, codes = differing[0] if differing else ("", 0)
    vs_ours = None if ours is None else agreement(ours, other[out], step)
    moved = agreement(other[out], ref[out], step)
    return SelfCheck(perturb, moved, len(differing), len(f.names), first, codes, vs_ours)


def teacher_forced(path: Path, x: np.ndarray, step: float, ref: dict[str, np.ndarray] | None = None) -> Forcing:
    """Each quantized tensor computed by *our* runtime from the *reference's* codes of its
    inputs (the reference's own run feeds every layer: teacher forcing, so no rounding of ours
    compounds), compared with the reference's codes; then the reference run again from the
    first layer where a code differs, with only that layer's differing codes replaced by ours,
    and its output compared (in output steps) with its unperturbed output: how far one
    one-step rounding difference moves the specification's own end-to-end result.  At every
    differing code, the layer is also run in float64 (``float64_ops``) to say whose rounding is
    the exact one.  ``ref``: ``reference_codes`` of the file when already computed."""
    f = QdqFile(path)
    probe = f.probe(21)
    out = probe.graph.output[0].name
    ref = ref if ref is not None else reference_codes(path, x)
    equal = total = worst = ours_exact = reference_exact = 0
    first = None
    for q in f.qnodes:
        if (made := f.layer(q, ref, f.opset)) is None:  # the file's own opset for our runtime
            continue
        ours = runtime.InferenceSession(made[0].SerializeToString(), threads=1).run(None, made[1])[0]
        theirs = ref[q.output[0]]
        if ours.shape != theirs.shape:
            continue
        diff = np.abs(ours.astype(np.int64) - theirs.astype(np.int64))
        equal, total, worst = equal + int((diff == 0).sum()), total + diff.size, max(worst, int(diff.max(initial=0)))
        if diff.any():
            layer64, feeds = f.layer(q, ref)  # opset 21 for the reference's Q/DQ
            exact = onnx.reference.ReferenceEvaluator(layer64, new_ops=float64_ops()).run(None, feeds)[0]
            ours_exact += int((exact == ours)[diff != 0].sum())
            reference_exact += int((exact == theirs)[diff != 0].sum())
            if first is None:
                first = (q, ours)
    forced = Agreement(equal / max(total, 1), worst)
    if first is None:
        return Forcing(forced, total - equal, total, None)
    q, ours = first
    cut = onnx.ModelProto()
    cut.CopyFrom(probe)
    kept = [n for n in cut.graph.node if q.output[0] not in n.output]
    del cut.graph.node[:]
    cut.graph.node.extend(kept)
    del cut.graph.output[1:]
    cut.graph.input.append(onnx.helper.make_tensor_value_info(q.output[0], f.elem(q), list(ours.shape)))
    moved = onnx.reference.ReferenceEvaluator(cut).run(None, {"input": x, q.output[0]: ours})[0]
    changed = int((ours != ref[q.output[0]]).sum())
    layer = f.producers[q.input[0]].name
    moved = agreement(moved, ref[out], step)
    return Forcing(forced, total - equal, total, moved, changed, layer, ours_exact, reference_exact)


def output_step(path: Path) -> float | None:
    """Scale of the DequantizeLinear (or QOperator DequantizeLinear) that produces the graph output."""
    model = onnx.load(str(path))
    out = model.graph.output[0].name
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if out in node.output and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            return float(inits[node.input[1]].reshape(-1)[0])
    return None


@dataclass
class Agreement:
    identical: float  # fraction of output codes equal
    max_steps: int

    def cell(self) -> str:
        return f"{100 * self.identical:.4f} % / {self.max_steps}"


def _cell(value) -> str:
    """A table cell: an Agreement, a layer-wise triple, or why the comparison could not run."""
    if isinstance(value, Agreement | Forcing | SelfCheck):
        return value.cell()
    if value is None:
        return "not run"
    if isinstance(value, tuple):
        shapes = f"; {value[3]} where the reference's shape differs" if value[3] else ""
        return f"{value[0].cell()} ({value[1]}/{value[2]} tensors{shapes})"
    return f"n/a: {value}"


def _attempt(fn, *args):
    """fn(*args), or the first line of the error it raised (the peer failed, not us)."""
    try:
        return fn(*args)
    except Exception as exc:  # a peer's limitation is a table entry, not the end of the run
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"


def agreement(ours: np.ndarray, other: np.ndarray, step: float) -> Agreement:
    steps = np.rint(np.abs(ours.astype(np.float64) - other.astype(np.float64)) / step).astype(np.int64)
    return Agreement(float((steps == 0).mean()), int(steps.max()))


@dataclass
class Row:
    model: str
    params_m: float
    fp32_rel: float
    int8: dict[str, dict[str, object]]
    seconds: float
    reference_seconds: float = 0.0  # of seconds: the onnx.reference columns' share


def _to_json(value):
    if isinstance(value, SelfCheck):
        return {
            "self": value.perturb,
            "output": _to_json(value.output),
            "tensors": value.tensors,
            "quantized": value.quantized,
            "first": value.first,
            "first_codes": value.first_codes,
            "ours": _to_json(value.ours),
        }
    if isinstance(value, Forcing):
        return {
            "forced": _to_json(value.layers),
            "differing": value.differing,
            "codes": value.codes,
            "sensitivity": _to_json(value.sensitivity),
            "changed": value.changed,
            "layer": value.layer,
            "ours_exact": value.ours_exact,
            "reference_exact": value.reference_exact,
        }
    if isinstance(value, Agreement):
        return {"identical": value.identical, "max_steps": value.max_steps}
    if isinstance(value, tuple):
        return {"layers": _to_json(value[0]), "compared": value[1], "quantized": value[2], "shapes": value[3]}
    return value


def _from_json(value):
    if isinstance(value, dict) and "self" in value:
        fields = {k: v for k, v in value.items() if k not in ("self", "output", "ours")}
        return SelfCheck(value["self"], _from_json(value["output"]), ours=_from_json(value.get("ours")), **fields)
    if isinstance(value, dict) and "forced" in value:
        fields = {k: v for k, v in value.items() if k not in ("forced", "sensitivity")}
        return Forcing(_from_json(value["forced"]), sensitivity=_from_json(value["sensitivity"]), **fields)
    if isinstance(value, dict) and "layers" in value:
        return (_from_json(value["layers"]), value["compared"], value["quantized"], value["shapes"])
    if isinstance(value, dict):
        return Agreement(value["identical"], value["max_steps"])
    return value


def row_json(r: Row, with_reference: bool, perturb: tuple[str, ...] = ()) -> str:
    int8 = {k: {c: _to_json(v) for c, v in cells.items()} for k, cells in r.int8.items()}
    record = {"model": r.model, "params_m": r.params_m, "fp32_rel": r.fp32_rel, "seconds": r.seconds}
    record["reference_seconds"] = r.reference_seconds
    return json.dumps({**record, "reference": with_reference, "perturb": list(perturb), "int8": int8})


def row_from_json(record: dict) -> Row:
    int8 = {k: {c: _from_json(v) for c, v in cells.items()} for k, cells in record["int8"].items()}
    seconds = record["seconds"], record.get("reference_seconds", 0.0)
    return Row(record["model"], record["params_m"], record["fp32_rel"], int8, *seconds)


def measure(name: str, size: int, folder: Path, with_reference: bool = True, perturb: tuple[str, ...] = ()) -> Row:
    """One model's row: export, quantize in the four forms, run everything; with_reference adds
    the onnx.reference columns (QDQ files), each of perturb a reference-vs-itself one (``self_check``)."""
    start = time.perf_counter()
    size = max(size, MIN_SIZE.get(name, 0))
    x = np.random.default_rng(2).standard_normal((1, 3, size, size), dtype=np.float32)
    fp32 = folder / f"{name}.onnx"
    params = export_fp32(name, fp32, size)
    ours = runtime.InferenceSession(str(fp32), threads=1).run(None, {"input": x})[0]
    ref = ort_run(fp32, x)
    # relative to the largest output (a zero-initialised head, as ViT's, makes it 0: absolute then)
    fp32_rel = float(np.abs(ours - ref).max() / max(float(np.abs(ref).max()), 1e-30))
    int8 = {}
    reference_seconds = 0.0
    for fmt, act in FORMATS:
        qpath = quantize(fp32, folder / f"{name}_{fmt}_{act}.onnx", size, fmt, act)
        ours_q = runtime.InferenceSession(str(qpath), threads=1).run(None, {"input": x})[0]
        step = output_step(qpath)
        if step is None:
            raise RuntimeError(f"{qpath.name}: the output is not a DequantizeLinear of codes")
        cells = {"ort": agreement(ours_q, ort_run(qpath, x), step)}
        if fmt == "qdq" and with_reference:
            began = time.perf_counter()
            codes = _attempt(reference_codes, qpath, x)  # one reference run feeds the three columns
            if isinstance(codes, str):  # the reference cannot run the file: every column says why
                cells["ref"] = cells["forced"] = codes
            else:
                cells["ref"] = agreement(ours_q, next(iter(codes.values())), step)
                cells["forced"] = _attempt(teacher_forced, qpath, x, step, codes)
            cells["layers"] = _attempt(layerwise, qpath, x)
            for kind in perturb:
                cells[f"self {kind}"] = (
                    codes if isinstance(codes, str) else _attempt(self_check, qpath, x, step, kind, codes, ours_q)
                )
            reference_seconds += time.perf_counter() - began
        int8[f"{fmt} {act}"] = cells
    return Row(name, params / 1e6, fp32_rel, int8, time.perf_counter() - start, reference_seconds)


KEYS = [f"{f} {a}" for f, a in FORMATS]
QDQ_KEYS = [k for k in KEYS if k.startswith("qdq")]


def header(ort_note: str, size: int) -> str:
    head = ["model", "params (M)", "fp32 rel. err vs ORT", "seconds"]
    head += [f"{k} layer-wise vs reference" for k in QDQ_KEYS] + [f"{k} output vs reference" for k in QDQ_KEYS]
    head += [f"{k} teacher-forced vs reference; reference's own sensitivity" for k in QDQ_KEYS]
    head += [f"{k} reference vs itself, {kind} sums" for k in QDQ_KEYS for kind in PERTURBATIONS]
    head += [f"{k} output vs ORT" for k in KEYS] + ["reference seconds"]
    lines = [
        f"CPU: {platform.processor() or platform.machine()}; runtime ISA path: {runtime.available_paths()[-1]}; "
        f"input 1×3×{size}×{size} (larger where the model needs it). {ort_note}",
        "",
        "int8 cells: identical codes / largest difference in steps. Layer-wise: every quantized tensor recomputed "
        "by the reference from our codes of its inputs (tensors compared / quantized tensors); output: the "
        "end-to-end output, where one-step differences compound through the layers.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    return "\n".join(lines)


def table_row(r: Row) -> str:
    cells = [r.model, f"{r.params_m:.1f}", f"{r.fp32_rel:.1e}", f"{r.seconds:.0f}"]
    cells += [_cell(r.int8[k].get("layers")) for k in QDQ_KEYS] + [_cell(r.int8[k].get("ref")) for k in QDQ_KEYS]
    cells += [_cell(r.int8[k].get("forced")) for k in QDQ_KEYS] + [
        _cell(r.int8[k].get(f"self {kind}")) for k in QDQ_KEYS for kind in PERTURBATIONS
    ]
    cells += [_cell(r.int8[k]["ort"]) for k in KEYS] + [f"{r.reference_seconds:.0f}"]
    return "| " + " | ".join(cells) + " |"


COMPACT_HEAD = [
    "model",
    "params (M)",
    "fp32 rel. err vs ORT",
    "s (reference s)",
    "layer-wise vs reference",
    "teacher-forced: differing codes (float64 layer = ours / = reference)",
    "ours vs reference, end to end",
    "reference vs itself: " + " · ".join(PERTURBATIONS),
    "ours vs the reference so changed: " + " · ".join(PERTURBATIONS),
    "vs ORT: qdq u8 ; qdq s8 ; qoperator u8 ; qoperator s8",
]


def _short(value, digits: int = 1) -> str:
    """An Agreement as 'identical % / steps', or why it is missing."""
    if isinstance(value, Agreement):
        return f"{100 * value.identical:.{digits}f} / {value.max_steps}"
    return "—" if value is None else f"n/a ({str(value).split(':')[0]})"


def compact_row(r: Row) -> str:
    """One model's reference columns in a table narrow enough to read: each cell gives the u8
    file, then the s8 file ('u8 ; s8'); agreements as identical % / largest difference in steps."""

    def both(cell) -> str:
        return " ; ".join(cell(r.int8[k]) for k in QDQ_KEYS)

    def layers(c) -> str:
        v = c.get("layers")
        return _short(v[0], 4) + (f" ({v[3]} shapes differ)" if v[3] else "") if isinstance(v, tuple) else _short(v)

    def forced(c) -> str:
        v = c.get("forced")
        if not isinstance(v, Forcing):
            return _short(v)
        return f"{v.differing} of {v.codes}" + (f" ({v.ours_exact} / {v.reference_exact})" if v.differing else "")

    def itself(c) -> str:
        cells = [c.get(f"self {kind}") for kind in PERTURBATIONS]
        return " · ".join(_short(v.output) if isinstance(v, SelfCheck) else _short(v) for v in cells)

    def vs_ours(c) -> str:
        cells = [c.get(f"self {kind}") for kind in PERTURBATIONS]
        return " · ".join(_short(v.ours) if isinstance(v, SelfCheck) else _short(v) for v in cells)

    cells = [r.model, f"{r.params_m:.1f}", f"{r.fp32_rel:.1e}", f"{r.seconds:.0f} ({r.reference_seconds:.0f})"]
    cells += [both(layers), both(forced), both(lambda c: _short(c.get("ref"))), both(itself), both(vs_ours)]
    cells.append(" ; ".join(_short(r.int8[k]["ort"]) for k in KEYS))
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated torchvision names (default: all within --max-params)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-params", type=float, default=90e6)
    parser.add_argument(
        "--no-reference", action="store_true", help="skip onnx.reference (slow): fp32 and ORT comparisons only"
    )
    parser.add_argument(
        "--perturb",
        default=",".join(PERTURBATIONS),
        help="comma-separated: one reference-vs-itself column for each, its Conv/Gemm/MatMul summed that other "
        f"conformant way ({', '.join(PERTURBATIONS)}; default all; none: no such column)",
    )
    parser.add_argument("--results", type=Path, help="JSON-lines file: append each row, skip models already in it")
    parser.add_argument("--table", action="store_true", help="print the table of --results' rows and stop")
    parser.add_argument("--compact", action="store_true", help="with --table: the reference columns only, narrow")
    args = parser.parse_args()
    from export.validate import probe_onnxruntime

    with_reference = not args.no_reference
    perturb = () if args.perturb == "none" or not with_reference else tuple(args.perturb.split(","))
    for kind in perturb:
        perturbed_ops(kind)  # an unknown name stops here, before any model runs
    done: dict[str, dict] = {}
    if args.results and args.results.exists():
        for text in args.results.read_text().splitlines():
            if text.strip():
                record = json.loads(text)
                done[record["model"]] = record
    if args.table and args.compact:
        print("| " + " | ".join(COMPACT_HEAD) + " |\n|" + "---|" * len(COMPACT_HEAD))
        for record in done.values():
            print(compact_row(row_from_json(record)) if "int8" in record else record["line"])
        return
    if args.table:
        print(header(probe_onnxruntime().note(), args.size), flush=True)
        for record in done.values():
            print(table_row(row_from_json(record)) if "int8" in record else record["line"], flush=True)
        return
    names = args.models.split(",") if args.models else classification_models(args.max_params)
    print(header(probe_onnxruntime().note(), args.size), flush=True)
    for name in names:
        record = done.get(name, {})
        has_all = (record.get("reference") or not with_reference) and set(perturb) <= set(record.get("perturb") or ())
        if name in done and ("int8" not in record or has_all):
            print(table_row(row_from_json(done[name])) if "int8" in done[name] else done[name]["line"], flush=True)
            continue
        record = None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = measure(name, args.size, Path(tmp), with_reference, perturb)
                line, record = table_row(row), row_json(row, with_reference, perturb)
            except runtime.InferenceError as exc:  # our runtime's failure: the row says so
                line = f"| {name} | FAILED in our runtime: {' '.join(str(exc).split())[:200]} |"
            except Exception as exc:  # torch.onnx or ORT could not produce the file
                line = f"| {name} | no file: {type(exc).__name__}: {str(exc).splitlines()[0][:120]} |"
        if args.results:
            with args.results.open("a") as f:
                f.write((record or json.dumps({"model": name, "reference": True, "line": line})) + "\n")
        print(line, flush=True)


if __name__ == "__main__":
    main()
