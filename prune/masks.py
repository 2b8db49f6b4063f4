"""Unstructured magnitude pruning with masks, and making the masks permanent.

Masks use torch.nn.utils.prune (a ``weight_orig`` parameter, a ``weight_mask`` buffer
and a forward pre-hook), so fine-tuning keeps pruned weights at zero. Re-pruning to a
higher sparsity updates the existing mask in place: already-pruned weights score zero
and stay pruned, which is what a gradual schedule needs. :func:`make_permanent` folds
the mask into a plain ``weight`` and removes the hook.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prune.channel_graph import is_prunable_conv
from prune.errors import PruneError
from prune.options import check_amount, check_choice, resolve_protect

UNSTRUCTURED_IMPORTANCES = ("l1", "l2", "taylor")


def weight_layers(model: nn.Module, protect: Iterable[str | nn.Module] = ()) -> dict[str, nn.Module]:
    """Conv and Linear layers whose weights unstructured pruning may touch."""
    protected = resolve_protect(model, protect)
    return {
        name: m
        for name, m in model.named_modules()
        if (is_prunable_conv(m) or isinstance(m, nn.Linear)) and name not in protected
    }


def masked_modules(model: nn.Module) -> list[str]:
    """Names of modules that currently carry a weight mask."""
    return [name for name, m in model.named_modules() if hasattr(m, "weight_mask")]


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward uses: ``weight_orig * weight_mask`` when masked."""
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def _scores(name: str, module: nn.Module, importance: str) -> torch.Tensor:
    w = effective_weight(module).float()
    if importance == "taylor":
        param = module.weight_orig if hasattr(module, "weight_mask") else module.weight
        if param.grad is None:
            raise PruneError(
                f"taylor importance needs gradients, but layer {name!r} has no .grad: "
                "run loss.backward() on a batch before pruning"
            )
        return (w * param.grad.detach().float()).abs()
    return w.abs()  # l1 and l2 rank single weights identically


def prune_weights(
    model: nn.Module,
    amount: float,
    *,
    importance: str = "l1",
    scope: str = "global",
    protect: Iterable[str | nn.Module] = (),
    layers: Iterable[str] | None = None,
) -> None:
    """Mask the smallest weights so that a fraction ``amount`` of them is zero.

    ``scope="global"`` ranks every weight of every layer together; ``"layer"`` prunes
    each layer to ``amount``. ``layers`` restricts pruning to the named layers.
    """
    check_amount(amount)
    check_choice(importance, UNSTRUCTURED_IMPORTANCES, "importance")
    check_choice(scope, ("global", "layer"), "scope")
    targets = weight_layers(model, protect)
    if layers is not None:
        wanted = list(layers)
        missing = [n for n in wanted if n not in targets]
        if missing:
            raise PruneError(f"not a prunable (unprotected Conv/Linear) layer: {', '.join(missing)}")
        targets = {n: targets[n] for n in wanted}
    if not targets:
        raise PruneError(f"{type(model).__name__} has no unprotected Conv or Linear layer to prune")
    scores = {name: _scores(name, m, importance) for name, m in targets.items()}
    if scope == "global":
        flat = torch.cat([s.flatten() for s in scores.values()])
        drop = torch.zeros_like(flat, dtype=torch.bool)
        drop[torch.argsort(flat, stable=True)[: round(amount * flat.numel())]] = True
        pieces = torch.split(drop, [s.numel() for s in scores.values()])
        masks = {n: ~p.view_as(scores[n]) for n, p in zip(scores, pieces, strict=True)}
    else:
        masks = {}
        for n, s in scores.items():
            drop = torch.zeros(s.numel(), dtype=torch.bool)
            drop[torch.argsort(s.flatten(), stable=True)[: round(amount * s.numel())]] = True
            masks[n] = ~drop.view_as(s)
    for name, module in targets.items():
        mask = masks[name].to(dtype=effective_weight(module).dtype, device=effective_weight(module).device)
        if hasattr(module, "weight_mask"):
            module.weight_mask.copy_(mask)
            module.weight = effective_weight(module)  # the pre-hook recomputes it at the next forward
        else:
            torch_prune.custom_from_mask(module, "weight", mask)


def detach_masked_weights(model: nn.Module) -> None:
    """Make each masked ``weight`` a leaf so the model can be deep-copied.

    torch's pruning hook leaves ``weight = weight_orig * weight_mask`` as a non-leaf
    tensor, which ``copy.deepcopy`` refuses; the hook recomputes it at the next forward.
    """
    for module in model.modules():
        if hasattr(module, "weight_mask"):
            module.weight = effective_weight(module)


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into a plain ``weight`` parameter and remove the pruning hooks."""
    for _, module in model.named_modules():
        if hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return model
