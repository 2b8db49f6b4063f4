"""Graph fusions before quantization: fold BatchNorm into Conv, fuse Conv/Linear + ReLU.

Folding uses BN's running statistics (eval semantics), so the folded conv computes
what the float model computes in eval mode; the int8 graph then has one weighted op
per conv with the activation as a saturation bound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

RELU_TARGETS = {F.relu, torch.relu, torch.relu_, torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
RELU6_TARGETS = {F.relu6}
HARDTANH_TARGETS = {F.hardtanh, torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default}


def fold_bn_into_conv(conv: nn.Conv2d | nn.Conv1d, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> nn.Conv2d | nn.Conv1d:
    """A new Conv2d (Conv1d) computing conv→bn (eval) in one op: w·γ/σ, (b−μ)·γ/σ + β."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics cannot be folded")
    fused = (nn.Conv1d if isinstance(conv, nn.Conv1d) else nn.Conv2d)(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(inv_std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(inv_std)
        factor = gamma * inv_std
        fused.weight.copy_(conv.weight * factor.reshape((-1,) + (1,) * (conv.weight.dim() - 1)))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(inv_std)
        fused.bias.copy_((bias - bn.running_mean) * factor + beta)
    return fused.to(conv.weight.device)


def activation_of(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'relu' / 'relu6' if ``node`` is that activation (module, function or method form)."""
    if node.op == "call_module":
        m = modules[node.target]  # type: ignore[index]
        if type(m) is nn.ReLU:
            return "relu"
        if type(m) is nn.ReLU6 or (type(m) is nn.Hardtanh and m.min_val == 0.0 and m.max_val == 6.0):
            return "relu6"
    elif node.op == "call_function":
        if node.target in RELU_TARGETS:
            return "relu"
        if node.target in RELU6_TARGETS:
            return "relu6"
        if node.target in HARDTANH_TARGETS and tuple(node.args[1:3]) == (0.0, 6.0):
            return "relu6"
    elif node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def sole_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def is_module(node: fx.Node, modules: dict[str, nn.Module], cls: type | tuple[type, ...]) -> bool:
    return node.op == "call_module" and isinstance(modules.get(node.target), cls)  # type: ignore[arg-type]


def fold_batchnorms(gm: fx.GraphModule) -> None:
    """Replace every Conv2d→BatchNorm2d (Conv1d→BatchNorm1d) pair (BN the conv's sole user) by one folded conv."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if not is_module(node, modules, (nn.Conv2d, nn.Conv1d)):
            continue
        user = sole_user(node)
        bn_cls = nn.BatchNorm1d if isinstance(modules[node.target], nn.Conv1d) else nn.BatchNorm2d  # type: ignore[index]
        if user is None or not is_module(user, modules, bn_cls):
            continue
        fused = fold_bn_into_conv(modules[node.target], modules[user.target])  # type: ignore[index]
        set_module(gm, node.target, fused)  # type: ignore[arg-type]
        user.replace_all_uses_with(node)
        gm.graph.erase_node(user)
    gm.graph.lint()


def set_module(gm: nn.Module, qualname: str, module: nn.Module) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def is_tensor_node(node: object) -> bool:
    """True for fx nodes whose recorded value (ShapeProp) is a tensor."""
    return isinstance(node, fx.Node) and "tensor_meta" in node.meta and hasattr(node.meta["tensor_meta"], "shape")

