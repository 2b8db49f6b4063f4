"""The dependency graph of coupled channels, found by walking a torch.fx trace.

Every channel of every feature map becomes an integer *element*. Walking the graph in
order, each node's output gets a list of elements, one per channel (dim 1):

- a Conv/Linear creates fresh elements for its output channels (its weight rows);
- BatchNorm, activations, pooling and dropout pass their input's list through;
- a depthwise or grouped conv unites each input-channel block with its output block,
  so a depthwise conv's channels follow its input;
- a residual add (or mul, sub, div) unites its operands element by element, so every
  member of a residual chain is pruned identically;
- a concat along channels concatenates the lists, which gives each input its offset;
- a flatten repeats each channel's element once per spatial position, so the Linear
  after it drops the right block of features.

Anything else (an op we do not understand, a graph output, a protected layer, the
network input) *blocks* its elements: the component containing them is never pruned.
Unknown ops therefore make pruning conservative, never wrong.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from prune.tracing import node_shape
from prune.union_find import UnionFind

Elements = list[int]

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.ZeroPad2d,
)  # fmt: skip

_PASS_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid,
    F.hardtanh, F.sigmoid, F.tanh, F.dropout, F.dropout2d, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.interpolate,
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
}  # fmt: skip
_PASS_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip", "contiguous",
    "clone", "detach", "float", "to",
}  # fmt: skip
_BINARY = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_",
}  # fmt: skip
_CONCAT = {torch.cat, torch.concat, torch.concatenate}
_RESHAPE = {torch.flatten, torch.reshape, "flatten", "view", "reshape"}
_REDUCE = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"}
_SHAPE_QUERIES = {getattr, "size", "dim", "numel"}


@dataclass
class Layer:
    """A module whose parameters are sliced when channels go.

    ``out_elems`` (Conv/Linear only) has one element per weight row; ``in_elems`` one
    per input channel or, after a flatten, per input feature.
    """

    name: str
    module: nn.Module
    out_elems: Elements | None = None
    in_elems: Elements | None = None


@dataclass
class ChannelGraph:
    """Coupled channels of one model: elements, their unions, and what must stay."""

    uf: UnionFind
    layers: dict[str, Layer]
    blocked: set[int] = field(default_factory=set)

    def root(self, element: int) -> int:
        return self.uf.find(element)

    def blocked_roots(self) -> set[int]:
        return {self.uf.find(e) for e in self.blocked}

    def producers(self) -> list[Layer]:
        """Layers with prunable output channels (Conv and Linear)."""
        return [layer for layer in self.layers.values() if layer.out_elems is not None]


def is_prunable_conv(module: nn.Module) -> bool:
    """Ordinary (not transposed) convolutions: output channels are weight rows."""
    return isinstance(module, _ConvNd) and not module.transposed


def build_channel_graph(gm: fx.GraphModule, protect: Iterable[str] = ()) -> ChannelGraph:
    """Walk a shape-annotated trace and return its coupled-channel graph."""
    return _Builder(gm, set(protect)).run()


class _Builder:
    def __init__(self, gm: fx.GraphModule, protect: set[str]) -> None:
        self.gm = gm
        self.protect = protect
        self.modules = dict(gm.named_modules())
        self.graph = ChannelGraph(UnionFind(), {})
        self.maps: dict[fx.Node, Elements | None] = {}

    def run(self) -> ChannelGraph:
        for node in self.gm.graph.nodes:
            self.maps[node] = self._visit(node)
        return self.graph

    # -- helpers -----------------------------------------------------------------
    def _fresh_blocked(self, node: fx.Node) -> Elements | None:
        shape = node_shape(node)
        if shape is None or len(shape) < 2:
            return None
        ids = self.graph.uf.new(shape[1])
        self.graph.blocked.update(ids)
        return ids

    def _block(self, elems: Elements | None) -> None:
        if elems:
            self.graph.blocked.update(elems)

    def _block_inputs(self, node: fx.Node) -> None:
        for inp in node.all_input_nodes:
            self._block(self.maps.get(inp))

    def _unknown(self, node: fx.Node) -> Elements | None:
        self._block_inputs(node)
        return self._fresh_blocked(node)

    def _union_lists(self, a: Elements, b: Elements) -> None:
        for x, y in zip(a, b, strict=True):
            self.graph.uf.union(x, y)

    def _layer(self, name: str, module: nn.Module, out_channels: int | None) -> Layer:
        layer = self.graph.layers.get(name)
        if layer is None:
            out = self.graph.uf.new(out_channels) if out_channels is not None else None
            layer = self.graph.layers[name] = Layer(name, module, out_elems=out)
        return layer

    def _bind_input(self, layer: Layer, elems: Elements) -> None:
        """Record a layer's input channels; a module called twice couples both inputs."""
        if layer.in_elems is None:
            layer.in_elems = list(elems)
        else:
            self._union_lists(layer.in_elems, elems)

    def _input(self, node: fx.Node, rank: int | None, width: int) -> Elements | None:
        """The first argument's elements if it has the expected rank and channel count."""
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node):
            return None
        shape, elems = node_shape(src), self.maps.get(src)
        if shape is None or elems is None or len(elems) != width:
            return None
        if rank is not None and len(shape) != rank:
            return None
        return elems

    # -- dispatch ----------------------------------------------------------------
    def _visit(self, node: fx.Node) -> Elements | None:
        if node.op == "placeholder":
            return self._fresh_blocked(node)
        if node.op == "get_attr":
            return None
        if node.op == "output":
            self._block_inputs(node)
            return None
        if node.op == "call_module":
            return self._call_module(node, self.modules[str(node.target)])
        return self._call_function(node)

    def _call_module(self, node: fx.Node, module: nn.Module) -> Elements | None:
        name = str(node.target)
        if is_prunable_conv(module):
            return self._conv(node, name, module)  # type: ignore[arg-type]
        if isinstance(module, nn.Linear):
            return self._linear(node, name, module)
        if isinstance(module, _BatchNorm):
            return self._norm(node, name, module)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return self._passthrough(node)
        if isinstance(module, _PASS_MODULES):
            return self._passthrough(node)
        return self._unknown(node)

    def _call_function(self, node: fx.Node) -> Elements | None:
        target = node.target
        if target in _SHAPE_QUERIES:
            return None
        if target in _PASS_FUNCTIONS or target in _PASS_METHODS:
            return self._passthrough(node)
        if target in _BINARY:
            return self._binary(node)
        if target in _CONCAT:
            return self._concat(node)
        if target in _RESHAPE:
            return self._reshape(node)
        if target in _REDUCE:
            return self._reduce(node)
        return self._unknown(node)

    # -- rules -------------------------------------------------------------------
    def _conv(self, node: fx.Node, name: str, conv: _ConvNd) -> Elements | None:
        elems = self._input(node, conv.weight.dim(), conv.in_channels)
        if elems is None:  # unbatched input or a functional oddity: leave it alone
            return self._unknown(node)
        layer = self._layer(name, conv, conv.out_channels)
        assert layer.out_elems is not None
        self._bind_input(layer, elems)
        if conv.groups > 1:
            in_per, out_per = conv.in_channels // conv.groups, conv.out_channels // conv.groups
            for g in range(conv.groups):
                block_in = elems[g * in_per : (g + 1) * in_per]
                block_out = layer.out_elems[g * out_per : (g + 1) * out_per]
                for e in block_in + block_out:
                    self.graph.uf.union(block_out[0], e)
        if name in self.protect:
            self._block(elems)
            self._block(layer.out_elems)
        return list(layer.out_elems)

    def _linear(self, node: fx.Node, name: str, linear: nn.Linear) -> Elements | None:
        elems = self._input(node, 2, linear.in_features)
        if elems is None:  # (N, T, F) inputs: dim 1 is not the feature axis
            return self._unknown(node)
        layer = self._layer(name, linear, linear.out_features)
        assert layer.out_elems is not None
        self._bind_input(layer, elems)
        if name in self.protect:
            self._block(elems)
            self._block(layer.out_elems)
        return list(layer.out_elems)

    def _norm(self, node: fx.Node, name: str, norm: _BatchNorm) -> Elements | None:
        elems = self._input(node, None, norm.num_features)
        if elems is None:
            return self._unknown(node)
        self._bind_input(self._layer(name, norm, None), elems)
        if name in self.protect:
            self._block(elems)
        return elems

    def _passthrough(self, node: fx.Node) -> Elements | None:
        out = node_shape(node)
        if out is None or len(out) < 2:
            return self._unknown(node)
        elems = self._input(node, len(out), out[1])
        return elems if elems is not None else self._unknown(node)

    def _binary(self, node: fx.Node) -> Elements | None:
        out = node_shape(node)
        if out is None or len(out) < 2:
            return self._unknown(node)
        operands = list(node.args[:2]) + [v for k, v in node.kwargs.items() if k == "other"]
        aligned: list[Elements] = []
        per_channel_constant = False
        for arg in operands:
            if not isinstance(arg, fx.Node):
                continue  # a Python scalar broadcasts over every channel
            shape, elems = node_shape(arg), self.maps.get(arg)
            if shape is None:
                continue  # a size or other non-tensor value
            if elems is not None and len(shape) == len(out) and len(elems) == out[1]:
                aligned.append(elems)
                continue
            self._block(elems)  # broadcast along channels: its own channels must stay
            idx = len(shape) - (len(out) - 1)
            if idx >= 0 and shape[idx] != 1:
                per_channel_constant = True  # e.g. a (C,1,1) parameter: cannot be sliced here
        for other in aligned[1:]:
            self._union_lists(aligned[0], other)
        if not aligned:
            return self._fresh_blocked(node)
        if per_channel_constant:
            self._block(aligned[0])
        return aligned[0]

    def _concat(self, node: fx.Node) -> Elements | None:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        out = node_shape(node)
        if out is None or len(out) < 2 or not isinstance(tensors, list | tuple) or not isinstance(dim, int):
            return self._unknown(node)
        maps = []
        for t in tensors:
            shape = node_shape(t) if isinstance(t, fx.Node) else None
            elems = self.maps.get(t) if isinstance(t, fx.Node) else None
            if shape is None or elems is None or len(shape) != len(out):
                return self._unknown(node)
            maps.append(elems)
        if dim % len(out) == 1:
            return [e for elems in maps for e in elems]
        for other in maps[1:]:
            if len(other) != len(maps[0]):
                return self._unknown(node)
            self._union_lists(maps[0], other)
        return maps[0]

    def _reshape(self, node: fx.Node) -> Elements | None:
        src = node.args[0] if node.args else None
        out = node_shape(node)
        shape = node_shape(src) if isinstance(src, fx.Node) else None
        elems = self.maps.get(src) if isinstance(src, fx.Node) else None
        if out is None or shape is None or elems is None or len(shape) < 2:
            return self._unknown(node)
        if tuple(out) == tuple(shape):
            return elems
        if len(out) == 2 and out[0] == shape[0] and out[1] == math.prod(shape[1:]):
            spatial = math.prod(shape[2:])  # flatten: channel c owns features c*spatial ... (c+1)*spatial-1
            return [e for e in elems for _ in range(spatial)]
        return self._unknown(node)

    def _reduce(self, node: fx.Node) -> Elements | None:
        src = node.args[0] if node.args else None
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        out = node_shape(node)
        shape = node_shape(src) if isinstance(src, fx.Node) else None
        elems = self.maps.get(src) if isinstance(src, fx.Node) else None
        if out is None or shape is None or elems is None or dims is None or len(out) < 2:
            return self._unknown(node)
        dims = [dims] if isinstance(dims, int) else list(dims)
        if not all(isinstance(d, int) for d in dims):
            return self._unknown(node)
        reduced = {d % len(shape) for d in dims}
        if reduced & {0, 1} or out[1] != shape[1]:
            return self._unknown(node)
        return elems
