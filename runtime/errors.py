"""Errors raised by the bundled runtime (no torch, no compress import: it deploys alone)."""


class InferenceError(ValueError):
    """The runtime cannot load or run a model: names the file, node and op type at fault."""


class UnsupportedOpError(InferenceError):
    """The graph holds ops the runtime does not implement; lists every offending node."""
