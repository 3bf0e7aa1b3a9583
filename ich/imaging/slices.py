"""One DICOM file to one rendered slice, or the reason it cannot be one: the per-file boundary that the preprocess
stage (which then writes the image as a PNG) and ``ich predict`` (which keeps it in memory) share.

The file is untrusted. Reading, decoding and windowing each turn any failure caused by the file into a short
quarantine reason naming the step, so both callers word the same problem the same way
(:mod:`ich.core.quarantine`). Only errors that are no property of the file (``KeyboardInterrupt``, a wrong
``rsna_pixel_fix``) are raised.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ich.core.quarantine import FILE_MISSING, SOURCE_CHANGED, file_unreadable
from ich.imaging.dicom import RSNA_PIXEL_FIX_MODES, UnusableSlice, read_ct_slice
from ich.imaging.rendering import render_rgb
from ich.imaging.windows import DEFAULT_WINDOWS, Window

__all__ = [
    "REASON_LIMIT",
    "RenderedSlice",
    "clip_reason",
    "step_failed",
    "caused_by_the_file",
    "render_file",
    "reuse_freed_memory",
]

#: The longest quarantine reason, in characters.
REASON_LIMIT = 200


@dataclass(frozen=True)
class RenderedSlice:
    """A usable file: ``rgb`` ``(image_size, image_size, 3)`` uint8 (the three windows as colour channels) and the
    slice's header ``metadata`` (:attr:`ich.imaging.dicom.CtSlice.metadata`)."""

    rgb: np.ndarray
    metadata: dict[str, object]


def clip_reason(text: str) -> str:
    """One line of at most :data:`REASON_LIMIT` characters (a quarantine reason)."""
    text = " ".join(text.split())
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


def step_failed(step: str, error: BaseException) -> str:
    """``"<step> failed (TypeName: message)"``, clipped to one short line."""
    message = " ".join(str(error).split())
    return clip_reason(
        f"{step} failed ({type(error).__name__}: {message})" if message else f"{step} failed ({type(error).__name__})"
    )


def caused_by_the_file(error: BaseException) -> bool:
    """Any ``Exception``, and the panics of Rust decoders (pylibjpeg-rle, ...): pyo3 derives its
    ``PanicException`` from ``BaseException``, yet a panic on one damaged file must cost only that file.
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` are never the file's doing."""
    return isinstance(error, Exception) or type(error).__module__ == "pyo3_runtime"


def render_file(
    path: str | os.PathLike,
    image_id: str,
    *,
    image_size: int,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    rsna_pixel_fix: str = "auto",
    sha256: str | None = None,
) -> RenderedSlice | str:
    """Read, decode (:func:`ich.imaging.dicom.read_ct_slice`) and render (:func:`ich.imaging.rendering.render_rgb`)
    one file; every failure of the file becomes the returned reason. Holds one file's bytes, its pixels and
    the image in memory.

    Args:
        path: the DICOM file.
        image_id: the slice's ID, kept in the metadata.
        image_size: side of the square image in pixels.
        windows: the three windows, in channel order.
        rsna_pixel_fix: ``auto`` or ``off`` (see :data:`ich.imaging.dicom.RSNA_PIXEL_FIX_MODES`).
        sha256: when given, the file's bytes must have this SHA-256 (recorded when the file was selected), else it is
            quarantined as changed.

    Raises:
        ValueError: ``rsna_pixel_fix`` is not one of the modes (a caller's error, not the file's).
    """
    if rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
        raise ValueError(f"rsna_pixel_fix must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. Received: {rsna_pixel_fix!r}")
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return FILE_MISSING
    except OSError as error:
        return file_unreadable(error)
    except Exception as error:  # per-file boundary: see the module docstring
        return step_failed("reading the file", error)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        return SOURCE_CHANGED
    try:
        ct_slice = read_ct_slice(data, image_id, rsna_pixel_fix)
    except UnusableSlice as error:
        return clip_reason(str(error))
    except BaseException as error:  # damaged headers make pydicom raise almost anything, some of it lazily
        if not caused_by_the_file(error):
            raise
        return step_failed("decoding the DICOM", error)
    try:
        rgb = render_rgb(ct_slice, image_size, windows)
    except Exception as error:
        return step_failed("windowing", error)
    return RenderedSlice(rgb, ct_slice.metadata)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> None:
    """Make glibc's malloc keep the few MB each file needs on its heap instead of mapping and unmapping them (the
    initializer of the worker processes that render files).

    Every file allocates arrays of 0.5-1 MB (the file, its stored and int32 pixels, the RGBA gather), above
    glibc's default threshold for fresh ``mmap`` pages: each one was faulted in and zeroed again, about 1,000
    page faults per file and a third of a worker's CPU time. Other C libraries keep their own behaviour.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 128 << 20)
