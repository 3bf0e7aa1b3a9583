"""The index stage's computation: a header-only scan of every labelled DICOM (:mod:`ich.imaging.header`, in the
worker pool of :mod:`ich.core.pool`), joined with the wide labels table into ``data/index.csv``.

Files are read in chunks of IDs by worker processes, and results stream back in input order, a bounded number of
chunks at a time, so memory stays flat at 752 k files. A chunk whose worker dies is read again one file a task,
so only the file that killed it is quarantined. Before reading a chunk, a worker starts the reads of all its files at
once (:func:`_read_ahead`): from a cold disk the scan is bound by one read at a time otherwise (752 k files on
2 cores, extrapolated from 100,000 evicted files: ~75-90 s with it, 140-230 s without, on this project's benchmark
machine; ``benchmarks/index.py --cache-states``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from ich.core.ids import image_path
from ich.core.pool import TaskFailure, map_chunks_in_order, resolve_workers
from ich.core.quarantine import INVALID_ID, NO_IMAGE_SIZE, no_pixel_data
from ich.data.pseudonyms import PSEUDONYMIZED_COLUMNS, pseudonym
from ich.data.tables import INDEX_COLUMNS, TABLE_COLUMNS
from ich.imaging.header import HEAD_BYTES, Header
from ich.imaging.header import read_header as read_dicom_header

__all__ = ["HeaderResult", "read_header", "index_headers", "IndexOutcome", "build_index"]

_CHUNK_SIZE = 64  # IDs per task: large enough to amortise inter-process traffic, small for a smooth bar


@dataclass(frozen=True)
class HeaderResult:
    """Outcome for one ID: ``row`` (the :data:`INDEX_COLUMNS`) when the header was read, else ``reason``."""

    image_id: str
    row: dict[str, object] | None
    reason: str | None


def read_header(image_id: str, dicom_dir: str | os.PathLike) -> HeaderResult:
    """Read the header of ``<dicom_dir>/<image_id>.dcm`` into one index row; every failure is a reason.

    ``position_z`` is ``ImagePositionPatient[2]`` in mm, NaN when the element is absent or malformed.
    A file that is missing, not DICOM, ends before its pixel data, has no image size, or that pydicom
    cannot parse gets a ``reason`` instead of a row.
    """
    try:
        path = image_path(dicom_dir, image_id, ".dcm")
    except ValueError:
        return HeaderResult(image_id, None, INVALID_ID)
    header = read_dicom_header(path)
    if isinstance(header, str):
        return HeaderResult(image_id, None, header)
    if not header.has_pixels:
        return HeaderResult(image_id, None, no_pixel_data(path.stat().st_size))
    if header.rows <= 0 or header.columns <= 0:
        return HeaderResult(image_id, None, NO_IMAGE_SIZE)
    return HeaderResult(image_id, _row(image_id, header), None)


def _row(image_id: str, header: Header) -> dict[str, object]:
    return {
        "ID": image_id,
        "PatientID": header.patient_id,
        "StudyInstanceUID": header.study_uid,
        "SeriesInstanceUID": header.series_uid,
        "position_z": header.position_z,
        "rows": header.rows,
        "columns": header.columns,
    }


def index_headers(
    image_ids: Iterable[str],
    dicom_dir: str | os.PathLike,
    workers: int = 0,
    progress: bool = False,
) -> Iterator[HeaderResult]:
    """Read the header of every ``<dicom_dir>/<ID>.dcm``, yielding one :class:`HeaderResult` per ID in order.

    Work goes to ``workers`` processes (0 = all cores) in chunks of IDs; at most two chunks per worker
    are in flight, so memory stays flat however many IDs there are and however slowly the results are
    consumed. ``image_ids`` may be any iterable, read as the scan goes.

    Args:
        image_ids: RSNA image IDs; an invalid one gets a reason and is never turned into a path.
        dicom_dir: folder of ``<ID>.dcm`` files.
        workers: worker processes; 0 = one per core, 1 = read in this process.
        progress: show a tqdm progress bar (its total is known when ``image_ids`` has a length).
    """
    workers = resolve_workers(workers)
    results = _scan(image_ids, str(dicom_dir), workers)
    if progress:
        from tqdm import tqdm

        total = len(image_ids) if isinstance(image_ids, Sized) else None
        results = iter(tqdm(results, total=total, desc="index", unit="file", mininterval=1.0))
    return results


_READ_AHEAD_THREADS = 16  # files opened at once per worker when reading ahead (a cold disk serves them in parallel)
_read_ahead_pool: tuple[int, ThreadPoolExecutor] | None = None  # (process ID, pool): a forked worker makes its own


def _start_reading(path: str) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return  # read_header gives the reason
    try:
        os.posix_fadvise(descriptor, 0, HEAD_BYTES, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _read_ahead(image_ids: list[str], dicom_dir: str) -> None:
    """Open each file of a chunk from several threads and ask the kernel to read its first bytes
    (``POSIX_FADV_WILLNEED``): from a cold disk the chunk's reads then overlap instead of waiting one by one; from the
    page cache this costs a few microseconds a file. A no-op where ``posix_fadvise`` does not exist."""
    global _read_ahead_pool
    if not hasattr(os, "posix_fadvise"):
        return
    if _read_ahead_pool is None or _read_ahead_pool[0] != os.getpid():
        _read_ahead_pool = (os.getpid(), ThreadPoolExecutor(_READ_AHEAD_THREADS, thread_name_prefix="read-ahead"))
    paths = []
    for image_id in image_ids:
        try:
            paths.append(str(image_path(dicom_dir, image_id, ".dcm")))
        except ValueError:
            continue  # read_header gives the reason
    list(_read_ahead_pool[1].map(_start_reading, paths))


def _scan(image_ids: Iterable[str], dicom_dir: str, workers: int) -> Iterator[HeaderResult]:
    read = partial(read_header, dicom_dir=dicom_dir)
    ahead = partial(_read_ahead, dicom_dir=dicom_dir)
    results = map_chunks_in_order(
        read, image_ids, chunk_size=_CHUNK_SIZE, workers=workers, in_process=workers == 1, prepare=ahead
    )
    for result in results:
        yield HeaderResult(result.item, None, result.reason) if isinstance(result, TaskFailure) else result


@dataclass(frozen=True)
class IndexOutcome:
    """What the index stage writes: the ``index`` (:data:`TABLE_COLUMNS`, sorted by ID), the ``quarantine``
    (``ID,reason``: label problems as ``labels: …``, then unreadable or missing files) and ``metrics``."""

    index: pd.DataFrame
    quarantine: pd.DataFrame
    metrics: dict[str, object]
    reasons: Counter


def build_index(
    labels: pd.DataFrame, label_problems: pd.DataFrame, results: Iterable[HeaderResult], key: bytes | None = None
) -> IndexOutcome:
    """Join the wide labels table with the header rows; every image without a usable header is quarantined.

    Args:
        labels: the wide table of :func:`ich.data.labels_csv.parse_long_csv` (``ID`` + labels).
        label_problems: its rejects (``ID,reason``), quarantined as ``labels: <reason>``.
        results: one :class:`HeaderResult` per row of ``labels``.
        key: pseudonym key; when given, :data:`ich.data.pseudonyms.PSEUDONYMIZED_COLUMNS` become keyed pseudonyms.
    """
    rows, failures = [], []
    for result in results:
        if result.row is None:
            failures.append({"ID": result.image_id, "reason": str(result.reason)})
        else:
            rows.append(result.row)
    headers = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    if key is not None:
        for column in PSEUDONYMIZED_COLUMNS:
            headers[column] = [pseudonym(str(value), key) for value in headers[column]]
    index = labels.merge(headers, on="ID", how="inner", validate="one_to_one")[list(TABLE_COLUMNS)].sort_values("ID")
    problems = label_problems.assign(reason="labels: " + label_problems["reason"]).drop_duplicates("ID")[["ID", "reason"]]
    reasons = Counter(entry["reason"] for entry in failures)
    metrics = {
        "images_labelled": int(len(labels)),
        "images_indexed": int(len(index)),
        "unreadable": len(failures),
        "label_problems": int(len(problems)),
        "patients": int(index["PatientID"].replace("", np.nan).nunique()),
        "series": int(index["SeriesInstanceUID"].replace("", np.nan).nunique()),
        "top_reasons": dict(reasons.most_common(10)),
    }
    quarantine = pd.concat([problems, pd.DataFrame(failures, columns=["ID", "reason"])], ignore_index=True)
    return IndexOutcome(index=index.reset_index(drop=True), quarantine=quarantine, metrics=metrics, reasons=reasons)
