"""Errors raised by quant/.

quant/ may import only torch (DESIGN.md §2), so it cannot derive from
``compress.CompressError``; the facade re-raises these as ``compress.QuantizationError``,
which derives from both, so callers may catch either.
"""


class QuantError(ValueError):
    """Bad input to quantization: names the layer or argument at fault."""
