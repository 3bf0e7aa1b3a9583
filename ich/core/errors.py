"""The base of every error a user can fix from its message (wrong params, data or folder); a stage prints
such an error as one line and exits 1 instead of showing a traceback."""

from __future__ import annotations

__all__ = ["PipelineError"]


class PipelineError(Exception):
    """A problem with the inputs or settings, not a bug: the message says what is wrong and what to do."""
