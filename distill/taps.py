"""Feature taps: record named submodules' outputs through removable forward hooks.

Hooks (not model surgery) so any nn.Module works unchanged: a plain model, a pruned
copy, or a torch.fx GraphModule whose generated forward calls its submodules by
name (a QAT model). Taps record only inside :meth:`FeatureTaps.recording`, so
ordinary forwards of the same model (evaluation, export) keep no activations alive.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from distill.errors import DistillError


class FeatureTaps:
    """Forward hooks on the submodules ``names`` of ``model``; ``role`` names the model in errors."""

    def __init__(self, model: nn.Module, names: Iterable[str], role: str = "model") -> None:
        self.role = role
        self.names = list(dict.fromkeys(names))  # unique, in order
        modules = dict(model.named_modules())
        for name in self.names:
            if name not in modules:
                raise DistillError(self._unknown(name, modules))
        self._features: dict[str, torch.Tensor] = {}
        self._recording = False
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(functools.partial(self._record, name)) for name in self.names
        ]

    def _unknown(self, name: str, modules: dict[str, nn.Module]) -> str:
        close = difflib.get_close_matches(name, modules, n=3)
        listed = ", ".join(repr(n) for n in list(modules)[1:21])
        more = " ..." if len(modules) > 21 else ""
        suggestion = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"{self.role} has no module named {name!r}{suggestion} (modules: {listed}{more})"

    def _record(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if not self._recording:
            return
        if not isinstance(output, torch.Tensor):
            raise DistillError(
                f"{self.role} module {name!r} ({type(module).__name__}) returned {type(output).__name__}, "
                "not a tensor; tap a submodule that outputs a single tensor"
            )
        if name in self._features:
            raise DistillError(
                f"{self.role} module {name!r} ran more than once in one forward; its output is ambiguous, "
                "tap a module that runs once"
            )
        self._features[name] = output

    @contextmanager
    def recording(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record during the ``with`` body; the yielded dict is filled by the forward inside it.

        On normal exit every tapped module must have run, or the taps would silently
        compare nothing.
        """
        if not self._handles and self.names:
            raise DistillError(f"{self.role} taps were removed; build a new Distiller")
        self._features = {}
        self._recording = True
        try:
            yield self._features
        finally:
            self._recording = False
        silent = [n for n in self.names if n not in self._features]
        if silent:
            raise DistillError(
                f"{self.role} module(s) {', '.join(map(repr, silent))} did not run during the forward; "
                "tap modules on the path from input to output"
            )

    @property
    def active(self) -> bool:
        """True until :meth:`remove`."""
        return bool(self._handles)

    def remove(self) -> None:
        """Detach every hook; the model behaves exactly as before the taps. Idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features = {}
