"""DICOM -> HU -> three windows -> square RGB PNG, in parallel, streaming, with quarantine."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ich.dicom import CtSlice, UnusableSlice, read_ct_slice
from ich.files import atomic_write_bytes, image_path
from ich.windows import DEFAULT_WINDOWS, Window, window_lut

__all__ = ["render_rgb", "encode_png", "FileResult", "process_file", "process_many"]

# Speed levers, measured by benchmarks/preprocess.py: one LUT gather instead of three float passes;
# OpenCV's area resize and PNG encoder (zlib level 1, run-length strategy: 4x faster than PIL's
# default, files about 1.6x its size) instead of PIL; one worker process per core.
_PNG_FLAGS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
cv2.setNumThreads(1)  # the parallelism is across files; threads inside each call only contend


def render_rgb(ct_slice: CtSlice, image_size: int, windows: Sequence[Window] = DEFAULT_WINDOWS) -> np.ndarray:
    """Window a slice into RGB and area-resize it to ``(image_size, image_size, 3)`` uint8.

    A non-square slice is first padded to a square with zeros (air is 0 in all three windows), so
    anatomy keeps its aspect ratio. Windowing happens at full resolution and before resizing, so each
    output pixel is the mean of the windowed input pixels it covers (up to rounding).
    """
    pixels = ct_slice.pixels
    low, high = int(pixels.min()), int(pixels.max())
    lut = window_lut(low, high, ct_slice.slope, ct_slice.intercept, windows).astype("<u4")
    # Pack each RGB entry into one little-endian uint32 (R, G, B, 0): a 1-D np.take of 4-byte items
    # is ~5x faster than gathering (n, 3) rows; the bytes are then viewed as RGBA.
    packed = lut[:, 0] | (lut[:, 1] << 8) | (lut[:, 2] << 16)
    rgba = np.take(packed, pixels - low).view(np.uint8).reshape(*pixels.shape, 4)
    rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    rows, columns = rgb.shape[:2]
    if rows != columns:
        side = max(rows, columns)
        top, left = (side - rows) // 2, (side - columns) // 2
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[top : top + rows, left : left + columns] = rgb
        rgb = square
    if rgb.shape[0] != image_size:
        interpolation = cv2.INTER_AREA if rgb.shape[0] > image_size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (image_size, image_size), interpolation=interpolation)
    return rgb


def encode_png(rgb: np.ndarray) -> bytes:
    """Encode ``(H, W, 3)`` uint8 RGB as PNG bytes (no text chunks, so no header text can leak)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", bgr, _PNG_FLAGS)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buffer.tobytes()


@dataclass(frozen=True)
class FileResult:
    """Outcome for one ID: ``metadata`` when a PNG was written, else ``reason`` for the quarantine."""

    image_id: str
    metadata: dict[str, object] | None
    reason: str | None


@dataclass(frozen=True)
class _Job:
    dicom_dir: str
    png_dir: str
    image_size: int
    windows: tuple[Window, ...]


_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _JOB
    _JOB = job


def process_file(image_id: str, job: _Job) -> FileResult:
    """Turn ``<dicom_dir>/<ID>.dcm`` into ``<png_dir>/<ID>.png``; every failure becomes a reason."""
    try:
        source = image_path(job.dicom_dir, image_id, ".dcm")
    except ValueError:
        return FileResult(image_id, None, "invalid image ID (expected ID_<hex>)")
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        return FileResult(image_id, None, "file missing: no <ID>.dcm in data.dicom_dir")
    except OSError as error:
        return FileResult(image_id, None, f"file unreadable: {error.strerror}")
    try:
        ct_slice = read_ct_slice(data, image_id)
        png = encode_png(render_rgb(ct_slice, job.image_size, job.windows))
    except UnusableSlice as error:
        return FileResult(image_id, None, str(error))
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, MemoryError) as error:
        return FileResult(image_id, None, f"unexpected {type(error).__name__}: {error}"[:200])
    atomic_write_bytes(image_path(job.png_dir, image_id, ".png"), png)
    return FileResult(image_id, ct_slice.metadata, None)


def _process_in_worker(image_id: str) -> FileResult:
    assert _JOB is not None  # set by the pool initializer
    return process_file(image_id, _JOB)


def process_many(
    image_ids: Iterable[str],
    dicom_dir: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_size: int,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    workers: int = 0,
) -> Iterator[FileResult]:
    """Process IDs across ``workers`` processes (0 = all cores), yielding results in input order.

    Results stream back in chunks, so memory stays flat however many files there are.
    """
    job = _Job(str(dicom_dir), str(png_dir), int(image_size), tuple(windows))
    Path(png_dir).mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    ids = list(image_ids)
    if workers == 1 or len(ids) < 2 * workers:
        for image_id in ids:
            yield process_file(image_id, job)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.imap(_process_in_worker, ids, chunksize=16)
