"""Export of module-level quantized models (weight-only, dynamic): float export, then rewrite.

The model is exported in float by torch.onnx (TorchScript exporter), with every quantized
module replaced by the float Linear its simulation multiplies with; the MatMul/Gemm nodes
whose constant weight equals one of those matrices (found by content, since the exporter
renames and transposes initializers) are then rewritten into the integer form.  For
weight-only modules that is com.microsoft ``MatMulNBits`` with the codes packed two to a
byte: the file holds 4-bit weights, ≈ 1/8 of fp32 plus the group scales.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from export.api import DEFAULT_OPSET, check
from export.atomic import write_atomic
from export.builder import MS_DOMAIN
from export.errors import OnnxExportError
from quant.weight_only import WeightOnlyLinear


def weight_key(w_nk: np.ndarray) -> str:
    """Content key of an (out, in) float32 weight."""
    w = np.ascontiguousarray(w_nk, np.float32)
    return f"{w.shape}:{hashlib.sha1(w.tobytes()).hexdigest()}"


@dataclass
class LinearSite:
    """A MatMul/Gemm node that multiplies by a constant weight, in (out, in) orientation."""

    node: onnx.NodeProto
    weight_nk: np.ndarray
    bias: str | None  # Gemm's C input, kept as an Add


def linear_sites(model: onnx.ModelProto) -> list[LinearSite]:
    """Every MatMul (B constant 2-D, or Transpose of one) and plain Gemm (alpha = beta = 1)."""
    inits = {t.name: t for t in model.graph.initializer}
    transposed = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "Transpose" and n.input[0] in inits
        and list(next((a.ints for a in n.attribute if a.name == "perm"), [1, 0])) == [1, 0]
    }
    sites = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MatMul" and len(node.input) == 2:
            b = node.input[1]
            if b in inits and len(inits[b].dims) == 2:
                sites.append(LinearSite(node, numpy_helper.to_array(inits[b]).T, None))
            elif b in transposed and len(inits[transposed[b]].dims) == 2:
                sites.append(LinearSite(node, numpy_helper.to_array(inits[transposed[b]]), None))
        elif node.op_type == "Gemm" and node.input[1] in inits and not attrs.get("transA", 0):
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
                continue
            w = numpy_helper.to_array(inits[node.input[1]])
            sites.append(LinearSite(node, w if attrs.get("transB", 0) else w.T,
                                    node.input[2] if len(node.input) > 2 and node.input[2] else None))
    return sites


class ScaledLinear(nn.Module):
    """Float twin of a module whose input is scaled per feature before the product (AWQ)."""

    def __init__(self, in_scale: torch.Tensor, linear: nn.Linear) -> None:
        super().__init__()
        self.register_buffer("in_scale", in_scale)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.in_scale)


def float_twin(
    qmodel: nn.Module, kinds: tuple[type, ...], weight_of: Callable[[nn.Module], torch.Tensor]
) -> tuple[nn.Module, dict[str, tuple[str, nn.Module]]]:
    """A copy of ``qmodel`` with each module of ``kinds`` replaced by a float nn.Linear holding
    ``weight_of(module)``, and the content keys of those weights -> (name, module)."""
    twin = copy.deepcopy(qmodel).eval()
    found: dict[str, tuple[str, nn.Module]] = {}
    for name, module in list(qmodel.named_modules()):
        if not isinstance(module, kinds):
            continue
        w = weight_of(module).detach().float()
        key = weight_key(w.numpy())
        if key in found:
            raise OnnxExportError(f"modules '{found[key][0]}' and '{name}' hold identical weights; "
                                  "the exporter cannot tell their MatMul nodes apart")
        found[key] = (name, module)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(w)
            if module.bias is not None:
                lin.bias.copy_(module.bias)
        in_scale = getattr(module, "in_scale", None)
        new = lin if in_scale is None else ScaledLinear(in_scale.clone(), lin)
        parent, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(parent) if parent else twin, leaf, new)
    if not found:
        raise OnnxExportError(f"{type(qmodel).__name__} holds no {'/'.join(k.__name__ for k in kinds)} modules")
    return twin, found


def export_float_model(
    model: nn.Module,
    example_inputs: tuple | Mapping[str, torch.Tensor],
    *,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    opset: int | None = None,
) -> onnx.ModelProto:
    """torch.onnx (TorchScript exporter) of an eval-mode model; dict inputs become keyword
    arguments named like the graph inputs.  Dimension 0 of every input and output is dynamic
    unless ``dynamic_axes`` says otherwise."""
    if isinstance(example_inputs, Mapping):
        args, kwargs = (), dict(example_inputs)
        names = list(input_names or kwargs)
    else:
        args, kwargs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,), {}
        names = list(input_names or [f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))])
    outs = list(output_names or ["output"])
    axes = dict(dynamic_axes) if dynamic_axes is not None else {n: {0: "batch"} for n in [*names, *outs]}
    buf = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, args, buf, kwargs=kwargs or None, dynamo=False,
                              opset_version=opset or DEFAULT_OPSET, input_names=names, output_names=outs,
                              dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:
        raise OnnxExportError(f"torch.onnx could not export {type(model).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    return onnx.load_from_string(buf.getvalue())


def replace_sites(
    model: onnx.ModelProto,
    found: dict[str, tuple[str, nn.Module]],
    rewrite: Callable[[LinearSite, str, nn.Module, onnx.GraphProto], list[onnx.NodeProto]],
) -> onnx.ModelProto:
    """Replaces each site whose weight is in ``found`` by ``rewrite``'s nodes (which write the
    site's output); modules the forward never reaches are named in a warning, and unused
    initializers are dropped."""
    graph = model.graph
    done: set[str] = set()
    for site in linear_sites(model):
        hit = found.get(weight_key(site.weight_nk))
        if hit is None:
            continue
        name, module = hit
        new_nodes = rewrite(site, name, module, graph)
        if site.bias is not None:
            tmp = f"{site.node.output[0]}_nobias"
            new_nodes[-1].output[0] = tmp
            new_nodes.append(helper.make_node("Add", [tmp, site.bias], [site.node.output[0]], name=f"{name}/bias"))
        index = list(graph.node).index(site.node)
        graph.node.remove(site.node)
        for offset, n in enumerate(new_nodes):
            graph.node.insert(index + offset, n)
        done.add(name)
    if not done:
        raise OnnxExportError("no MatMul/Gemm of the exported graph carries a quantized module's weights")
    if missing := sorted({n for n, _ in found.values()} - done):
        warnings.warn(f"{missing} do not take part in the exported forward; their weights are not in the file",
                      stacklevel=3)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def pack_codes(codes: np.ndarray, bits: int, n: int, group: int) -> np.ndarray:
    """(N, blocks·group) codes -> MatMulNBits' B (N, blocks, group·bits/8): two 4-bit codes a
    byte, low nibble first."""
    c = codes.reshape(n, -1, group).astype(np.uint8)
    return c if bits == 8 else (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)


def pack_zero_points(zero: np.ndarray, bits: int) -> np.ndarray:
    """(N, blocks) zero points -> (N·ceil(blocks·bits/8),) bytes, low nibble first."""
    z = zero.astype(np.uint8)
    if bits == 8:
        return z.reshape(-1)
    if z.shape[1] % 2:
        z = np.pad(z, ((0, 0), (0, 1)))
    return (z[:, 0::2] | (z[:, 1::2] << 4)).astype(np.uint8).reshape(-1)


def _nbits_nodes(site: LinearSite, name: str, module: WeightOnlyLinear, graph: onnx.GraphProto) -> list:
    spec = module.spec
    n, k = module.out_features, module.in_features
    inits = [
        numpy_helper.from_array(pack_codes(module.codes.numpy(), spec.bits, n, spec.group_size), f"{name}.qweight"),
        numpy_helper.from_array(module.scale.numpy().reshape(-1).astype(np.float32), f"{name}.scales"),
    ]
    inputs = [site.node.input[0], inits[0].name, inits[1].name]
    if not spec.symmetric:
        inits.append(numpy_helper.from_array(pack_zero_points(module.zero.numpy(), spec.bits), f"{name}.zero_points"))
        inputs.append(inits[-1].name)
    graph.initializer.extend(inits)
    # AWQ's input scaling is already a Mul in the float twin (ScaledLinear), in front of this MatMul
    return [helper.make_node("MatMulNBits", inputs, [site.node.output[0]], name=f"{name}/MatMulNBits",
                             domain=MS_DOMAIN, K=k, N=n, bits=spec.bits, block_size=spec.group_size)]


def _packed_tensor(values: np.ndarray, name: str, data_type: int) -> onnx.TensorProto:
    """An INT4/UINT4 (two codes a byte, first element in the low nibble, as ONNX stores them) or
    8-bit initializer of ``values``' shape."""
    if data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        flat = (values.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
        if flat.size % 2:
            flat = np.append(flat, np.uint8(0))
        raw = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
        return helper.make_tensor(name, data_type, values.shape, raw, raw=True)
    return numpy_helper.from_array(values.astype(np.int8 if data_type == onnx.TensorProto.INT8 else np.uint8), name)


def _blocked_dq_nodes(site: LinearSite, name: str, module: WeightOnlyLinear, graph: onnx.GraphProto) -> list:
    """Opset-21 DequantizeLinear of the (K, N) codes, blocked along K (``block_size`` = group),
    then a plain MatMul: symmetric groups as signed codes without zero point, asymmetric ones as
    unsigned codes with a zero point per block."""
    spec = module.spec
    codes_kn = module.codes.numpy().astype(np.int16).T  # (K, N) unsigned codes
    scale_kn = np.ascontiguousarray(module.scale.numpy().astype(np.float32).T)  # (K/g, N)
    if spec.symmetric:  # unsigned codes around 2^(b-1) -> signed codes around 0, same values
        dtype = onnx.TensorProto.INT4 if spec.bits == 4 else onnx.TensorProto.INT8
        inits = [_packed_tensor(codes_kn - (1 << (spec.bits - 1)), f"{name}.qweight", dtype)]
    else:
        dtype = onnx.TensorProto.UINT4 if spec.bits == 4 else onnx.TensorProto.UINT8
        zero_kn = module.zero.numpy().astype(np.int16).T
        inits = [_packed_tensor(codes_kn, f"{name}.qweight", dtype)]
    inits.append(numpy_helper.from_array(scale_kn, f"{name}.scales"))
    if not spec.symmetric:
        inits.append(_packed_tensor(zero_kn, f"{name}.zero_points", dtype))
    graph.initializer.extend(inits)
    w = f"{name}/weight"
    return [helper.make_node("DequantizeLinear", [t.name for t in inits], [w], name=f"{name}/DequantizeLinear",
                             axis=0, block_size=spec.group_size),
            helper.make_node("MatMul", [site.node.input[0], w], [site.node.output[0]], name=f"{name}/MatMul")]


WEIGHT_ONLY_FORMATS = ("matmulnbits", "dequantize_linear")
BLOCKED_DQ_OPSET = 21


def build_weight_only(
    qmodel: nn.Module, example_inputs: tuple | Mapping[str, torch.Tensor], *, format: str = "matmulnbits",
    **export_kwargs
) -> onnx.ModelProto:
    """The checked ONNX model of a weight-only quantized model, in memory: ``format`` 'matmulnbits'
    (com.microsoft MatMulNBits) or 'dequantize_linear' (opset-21 blocked DequantizeLinear of
    INT4/UINT4 initializers + MatMul, standard ONNX)."""
    if format not in WEIGHT_ONLY_FORMATS:
        raise OnnxExportError(f"weight-only format must be one of {list(WEIGHT_ONLY_FORMATS)}, got {format!r}")
    rewrite = _nbits_nodes
    if format == "dequantize_linear":
        opset = export_kwargs.get("opset") or BLOCKED_DQ_OPSET
        if opset < BLOCKED_DQ_OPSET:
            raise OnnxExportError(f"format 'dequantize_linear' needs opset >= {BLOCKED_DQ_OPSET} (block_size, "
                                  f"INT4/UINT4), got opset {opset}")
        export_kwargs["opset"] = opset
        rewrite = _blocked_dq_nodes
    twin, found = float_twin(qmodel, (WeightOnlyLinear,), lambda m: m.dequantized_weight())
    model = replace_sites(export_float_model(twin, example_inputs, **export_kwargs), found, rewrite)
    check(model)
    return model


def export_weight_only(
    qmodel: nn.Module, path: str | os.PathLike, example_inputs: tuple | Mapping[str, torch.Tensor], **export_kwargs
) -> Path:
    """Write the ONNX file of a weight-only quantized model atomically.

    ``export_kwargs``: format ('matmulnbits' or 'dequantize_linear', see build_weight_only),
    input_names, output_names, dynamic_axes, opset (see export_float_model)."""
    return write_atomic(path, build_weight_only(qmodel, example_inputs, **export_kwargs).SerializeToString())
