"""Errors raised by distill/ (re-raised by the facade as ``compress.DistillationError``)."""


class DistillError(ValueError):
    """Bad distillation input: names the loss, the tapped module or the shape at fault."""
