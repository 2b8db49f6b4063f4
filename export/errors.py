"""Errors raised by export/ (re-raised by the facade as ``compress.ExportError``)."""


class OnnxExportError(ValueError):
    """The model cannot be exported: names every offending module, before anything is written."""
