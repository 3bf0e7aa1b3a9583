"""Running a stage script: logging, and known errors turned into one clear line and exit code 1."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from ich.core.errors import PipelineError

__all__ = ["StageError", "run_stage"]

logger = logging.getLogger("ich")


class StageError(PipelineError, RuntimeError):
    """A stage cannot go on; the message says what is wrong and what to check."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main()``: problems with inputs or settings (:class:`ich.core.errors.PipelineError`, missing or
    unwritable files) print one clear line and exit 1, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # pydicom logs every RSNA "ID_..." UID as invalid; real problems reach us as exceptions instead.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        main()
    except (PipelineError, PermissionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
