"""DICOM -> HU -> three windows -> square RGB PNG, in parallel, streaming, with quarantine."""

from __future__ import annotations

import ctypes
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from ich.imaging.dicom import RSNA_PIXEL_FIX_MODES, UnusableSlice, read_ct_slice
from ich.core.files import write_file
from ich.core.pool import TaskFailure, map_in_order, resolve_workers
from ich.core.ids import image_path
from ich.core.labels import LABELS
from ich.imaging.png import encode_png
from ich.imaging.rendering import render_rgb
from ich.imaging.windows import DEFAULT_WINDOWS, Window

__all__ = [
    "FileResult",
    "process_file",
    "process_many",
    "SPLIT_COLUMNS",
    "PreprocessOutcome",
    "collect_outcome",
]

# Speed levers, measured by benchmarks/preprocess.py and benchmarks/preprocess_stage.py: one LUT gather
# instead of three float passes (ich.imaging.rendering); OpenCV's area resize; the PNG writer of ich.imaging.png (numpy "Up"
# filter, ISA-L deflate); one worker process per core.
_REASON_LIMIT = 200


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
    rsna_pixel_fix: str = "auto"


def _clip(text: str) -> str:
    """One line of at most ``_REASON_LIMIT`` characters (a quarantine reason)."""
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _reason(step: str, error: BaseException) -> str:
    """``"<step> failed (TypeName: message)"``, clipped to one short line."""
    message = " ".join(str(error).split())
    return _clip(f"{step} failed ({type(error).__name__}: {message})" if message else f"{step} failed ({type(error).__name__})")


def _caused_by_the_file(error: BaseException) -> bool:
    """Any ``Exception``, and the panics of Rust decoders (pylibjpeg-rle, ...): pyo3 derives its
    ``PanicException`` from ``BaseException``, yet a panic on one damaged file must cost only that file.
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` are never the file's doing."""
    return isinstance(error, Exception) or type(error).__module__ == "pyo3_runtime"


def process_file(image_id: str, job: _Job) -> FileResult:
    """Turn ``<dicom_dir>/<ID>.dcm`` into ``<png_dir>/<ID>.png``; every failure of the file becomes a reason.

    This is the boundary between one untrusted file and the run: reading, decoding, windowing and
    encoding each turn any exception into a short reason naming the step and the error. Only writing
    the PNG may raise (a full disk or a read-only output is no property of the file).
    """
    try:
        source = image_path(job.dicom_dir, image_id, ".dcm")
        target = image_path(job.png_dir, image_id, ".png")
    except ValueError:
        return FileResult(image_id, None, "invalid image ID (expected ID_<hex>)")
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        return FileResult(image_id, None, "file missing: no <ID>.dcm in data.dicom_dir")
    except OSError as error:
        return FileResult(image_id, None, f"file unreadable: {error.strerror or type(error).__name__}")
    except Exception as error:  # per-file boundary: see the docstring
        return FileResult(image_id, None, _reason("reading the file", error))
    try:
        ct_slice = read_ct_slice(data, image_id, job.rsna_pixel_fix)
    except UnusableSlice as error:
        return FileResult(image_id, None, _clip(str(error)))
    except BaseException as error:  # damaged headers make pydicom raise almost anything, some of it lazily
        if not _caused_by_the_file(error):
            raise
        return FileResult(image_id, None, _reason("decoding the DICOM", error))
    try:
        rgb = render_rgb(ct_slice, job.image_size, job.windows)
    except Exception as error:
        return FileResult(image_id, None, _reason("windowing", error))
    try:
        png = encode_png(rgb)
    except Exception as error:
        return FileResult(image_id, None, _reason("PNG encoding", error))
    write_file(target, png)
    return FileResult(image_id, ct_slice.metadata, None)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _reuse_freed_memory() -> None:
    """Make glibc's malloc keep the few MB each file needs on its heap instead of mapping and unmapping them.

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


def process_many(
    image_ids: Iterable[str],
    dicom_dir: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_size: int,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    workers: int = 0,
    rsna_pixel_fix: str = "auto",
    file_timeout_s: float | None = None,
) -> Iterator[FileResult]:
    """Process IDs across ``workers`` processes (0 = all cores), yielding one result per ID in input order.

    With ``file_timeout_s`` every file is processed in a worker process, so a decoder that hangs or
    crashes costs that file (quarantined with the reason), never the run. Without it, one worker (or
    fewer files than two per worker) runs in this process. Results stream back as they are ready, so
    memory stays flat however many files there are.
    """
    if rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
        raise ValueError(f"rsna_pixel_fix must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. Received: {rsna_pixel_fix!r}")
    if file_timeout_s is not None and not file_timeout_s > 0:
        raise ValueError(f"file_timeout_s must be > 0 seconds (or None for no limit). Received: {file_timeout_s}")
    job = _Job(str(dicom_dir), str(png_dir), int(image_size), tuple(windows), rsna_pixel_fix)
    Path(png_dir).mkdir(parents=True, exist_ok=True)
    workers = resolve_workers(workers)
    ids = list(image_ids)
    in_process = file_timeout_s is None and (workers == 1 or len(ids) < 2 * workers)
    results = map_in_order(
        partial(process_file, job=job), ids, workers=workers, timeout_s=file_timeout_s,
        initializer=_reuse_freed_memory, in_process=in_process,
    )
    for result in results:
        yield FileResult(result.item, None, result.reason) if isinstance(result, TaskFailure) else result


#: Columns of the per-split tables ``data/split/{train,val,test}.csv`` (the contract's, plus where each slice lies).
SPLIT_COLUMNS: tuple[str, ...] = ("ID", *LABELS, "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "position_z")


@dataclass(frozen=True)
class PreprocessOutcome:
    """What the preprocess stage writes: ``tables`` (per split, the processed images in
    :data:`SPLIT_COLUMNS`, sorted by ID), ``quarantine`` (``ID,reason``: the index stage's entries, then
    this stage's unusable files), the ``metrics`` summary, and ``reasons`` (count per reason of this
    stage's unusable files)."""

    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    metrics: dict[str, object]
    reasons: Counter


def collect_outcome(results: Iterable[FileResult], sampled: pd.DataFrame, earlier: pd.DataFrame) -> PreprocessOutcome:
    """Gather the per-file results into the stage's tables.

    Args:
        results: one :class:`FileResult` per row of ``sampled``.
        sampled: the sample stage's table (``ID``, labels, patient/study/series, ``position_z``, ``split``).
        earlier: the quarantine so far (``ID,reason``; the index stage's label and file problems).
    """
    quarantine = [{"ID": result.image_id, "reason": str(result.reason)} for result in results if result.metadata is None]
    unusable = {entry["ID"] for entry in quarantine}
    processed = sampled[~sampled["ID"].isin(unusable)].sort_values("ID")
    tables = {name: processed[processed["split"] == name][list(SPLIT_COLUMNS)] for name in ("train", "val", "test")}
    reasons = Counter(entry["reason"] for entry in quarantine)
    fraction = len(quarantine) / max(len(sampled), 1)
    metrics = {
        "images": int(len(sampled)),
        "png_written": int(len(processed)),
        "quarantined": len(quarantine),
        "quarantined_fraction": round(fraction, 6),
        "quarantined_before": int(len(earlier)),
        "top_reasons": dict(reasons.most_common(10)),
        **{name: int(len(table)) for name, table in tables.items()},
    }
    return PreprocessOutcome(
        tables=tables,
        quarantine=pd.concat([earlier[["ID", "reason"]], pd.DataFrame(quarantine, columns=["ID", "reason"])], ignore_index=True),
        metrics=metrics,
        reasons=reasons,
    )
