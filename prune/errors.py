"""Errors raised by prune/ (re-raised by the facade as ``compress.PruningError``)."""


class PruneError(ValueError):
    """Bad pruning input: names the module, the argument or the dependency group at fault."""
