"""The one error every step of an export raises."""

from __future__ import annotations


class ExportError(RuntimeError):
    """The checkpoint cannot be exported, or the repository holds another model."""
