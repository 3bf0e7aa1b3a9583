"""Quarantine: the one table of reasons an image cannot be used, and the limit above which a stage stops.

Every stage that reads files (index, preprocess) and ``ich predict`` word the same problem the same way, so
``data/quarantine.csv`` and a prediction run's ``quarantine.csv`` can be counted by reason across runs.
"""

from __future__ import annotations

import signal
from collections import Counter

__all__ = [
    "INVALID_ID",
    "FILE_MISSING",
    "NOT_DICOM",
    "DICOMDIR",
    "NO_IMAGE_SIZE",
    "SOURCE_CHANGED",
    "short",
    "file_unreadable",
    "unreadable_header",
    "no_pixel_data",
    "timed_out",
    "worker_died",
    "quarantine_failure",
]

INVALID_ID = "invalid image ID (expected ID_<hex>)"
FILE_MISSING = "file missing: no <ID>.dcm in data.dicom_dir"
NOT_DICOM = "not a DICOM file (no 'DICM' prefix and no DICOM header found)"
DICOMDIR = "DICOMDIR (an index of a DICOM media folder, not an image)"
NO_IMAGE_SIZE = "no image size (Rows/Columns missing or zero)"
SOURCE_CHANGED = "file changed since it was selected (its SHA-256 differs from data/dicom/manifest.csv; rerun copy)"


def short(error: BaseException, limit: int = 160) -> str:
    """An exception's message on one line of at most ``limit`` characters (its type name when it has none)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def file_unreadable(error: OSError) -> str:
    return f"file unreadable: {error.strerror or type(error).__name__}"


def unreadable_header(error: BaseException) -> str:
    return f"unreadable DICOM header: {short(error)}"


def no_pixel_data(size: int) -> str:
    return f"no pixel data: the file ends after {size} bytes, before any (truncated?)"


def timed_out(seconds: float) -> str:
    return f"timed out after {seconds:g} s (its worker process was stopped)"


def worker_died(exitcode: int | None) -> str:
    """The reason for a file whose worker process died (``exitcode`` as multiprocessing reports it)."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"the worker process died while processing this file ({how})"


def quarantine_failure(
    quarantined: int,
    images: int,
    reasons: Counter,
    max_quarantine_fraction: float,
    quarantine_csv: str,
    what: str = "sampled images",
) -> str | None:
    """The stage's error message when more than ``max_quarantine_fraction`` of the images are unusable, else None."""
    fraction = quarantined / max(images, 1)
    if fraction <= max_quarantine_fraction:
        return None
    common = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
    return (
        f"{quarantined} of {images} {what} ({fraction:.1%}) could not be used, more than "
        f"`preprocess.max_quarantine_fraction` = {max_quarantine_fraction:.1%}. Most common: {common}. "
        f"Check that `data.dicom_dir` is the folder of <ID>.dcm files that `data.labels_csv` describes "
        f"(on RSNA: stage_2_train/ with stage_2_train.csv). Every image and reason is in {quarantine_csv}."
    )
