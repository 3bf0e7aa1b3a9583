"""A header-only scan of labelled DICOMs: patient, study, series, slice position and size per image.

Only the header is read (the file is parsed up to its PixelData element and no further), so a scan of
RSNA's 752,803 files reads about 1 KB of each instead of 0.5 MB. Files are read in parallel worker
processes and results stream back in input order, a bounded number of chunks at a time.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import warnings
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from ich.imaging.dicom import METADATA_COLUMNS, values_unchecked
from ich.core.ids import image_path
from ich.core.labels import LABELS
from ich.data.pseudonyms import PSEUDONYMIZED_COLUMNS, pseudonym

__all__ = ["INDEX_COLUMNS", "TABLE_COLUMNS", "HeaderResult", "read_header", "index_headers", "IndexOutcome", "build_index", "read_index"]

#: Keys of :attr:`HeaderResult.row`, in this order: the header fields read from every slice.
INDEX_COLUMNS: tuple[str, ...] = METADATA_COLUMNS

# Only these elements are kept; pydicom skips the values of all others. Modality and SOPClassUID
# decide whether a file without the 'DICM' prefix is a bare dataset (as ich.imaging.dicom accepts it).
_TAGS = [
    Tag(keyword)
    for keyword in (
        "SOPClassUID",
        "Modality",
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "ImagePositionPatient",
        "Rows",
        "Columns",
    )
]
# RSNA headers end before 2 KB; a longer header is parsed again from the file (see _read_open_header).
_HEAD_BYTES = 4096
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
        return HeaderResult(image_id, None, "invalid image ID (expected ID_<hex>)")
    try:
        with open(path, "rb") as stream:
            return _read_open_header(image_id, stream)
    except FileNotFoundError:
        return HeaderResult(image_id, None, "file missing: no <ID>.dcm in data.dicom_dir")
    except OSError as error:
        return HeaderResult(image_id, None, f"file unreadable: {error.strerror or error}")
    except Exception as error:  # a damaged header can raise anything from the parser: one file's problem
        return HeaderResult(image_id, None, f"unreadable DICOM header: {_short(error)}")


def _read_open_header(image_id: str, stream: BinaryIO) -> HeaderResult:
    size = os.fstat(stream.fileno()).st_size
    source: BinaryIO = io.BytesIO(stream.read(_HEAD_BYTES))
    end = min(size, _HEAD_BYTES)
    with warnings.catch_warnings(), values_unchecked():
        # RSNA keeps its IDs in UID elements ("ID_..."), which pydicom would warn about on every file;
        # a damaged header's warnings are no use either: what counts is whether the values read.
        warnings.simplefilter("ignore")
        if size > _HEAD_BYTES:
            try:
                dataset = _parse(source)
            except Exception:  # perhaps only cut off by the prefix: the whole file decides below
                dataset = None
            if dataset is not None and _stopped_at_pixels(dataset, source, end):
                return _header_row(image_id, dataset)
            # The header runs past the prefix (or is damaged): parse it again from the file itself.
            stream.seek(0)
            source, end = stream, size
        dataset = _parse(source)
        if dataset is None:
            return HeaderResult(image_id, None, "not a DICOM file (no 'DICM' prefix and no DICOM header found)")
        if not _stopped_at_pixels(dataset, source, end):
            return HeaderResult(
                image_id, None, f"no pixel data: the file ends after {size} bytes, before any (truncated?)"
            )
        return _header_row(image_id, dataset)


def _parse(source: BinaryIO) -> Dataset | None:
    """The header elements of :data:`_TAGS`, read up to the pixel data; None when it is not DICOM.

    A file without the 'DICM' prefix is read as a bare dataset (as some exporters write them) and
    believed only if it has what image objects carry, as :mod:`ich.imaging.dicom` does.
    """
    try:
        return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=_TAGS)
    except InvalidDicomError:
        source.seek(0)
    try:
        dataset = pydicom.dcmread(source, force=True, stop_before_pixels=True, specific_tags=_TAGS)
    except Exception:  # a random byte stream can raise anything from the parser
        return None
    return dataset if "SOPClassUID" in dataset or "Modality" in dataset else None


def _stopped_at_pixels(dataset: Dataset, source: BinaryIO, end: int) -> bool:
    """Whether reading stopped at the pixel data rather than at the end of ``source`` (``end`` bytes).

    A deflated dataset is decompressed whole into memory, so its file position tells nothing.
    """
    if dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return True
    return source.tell() < end


def _header_row(image_id: str, dataset: Dataset) -> HeaderResult:
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        return HeaderResult(image_id, None, "no image size (Rows/Columns missing or zero)")
    row = {
        "ID": image_id,
        "PatientID": str(dataset.get("PatientID", "") or ""),
        "StudyInstanceUID": str(dataset.get("StudyInstanceUID", "") or ""),
        "SeriesInstanceUID": str(dataset.get("SeriesInstanceUID", "") or ""),
        "position_z": _position_z(dataset),
        "rows": rows,
        "columns": columns,
    }
    return HeaderResult(image_id, row, None)


def _position_z(dataset: Dataset) -> float:
    """``ImagePositionPatient[2]`` as a finite float, else NaN (absent, not three numbers, not a number)."""
    try:
        position = dataset.get("ImagePositionPatient")
        if position is None or isinstance(position, (str, bytes)) or len(position) != 3:
            return math.nan
        value = float(position[2])
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_chunk(image_ids: list[str], dicom_dir: str) -> list[HeaderResult]:
    return [read_header(image_id, dicom_dir) for image_id in image_ids]


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
    if workers < 0:
        raise ValueError(f"`workers` must be 0 (all cores) or a positive count. Received: {workers}")
    results = _scan(image_ids, str(Path(dicom_dir)), workers or os.cpu_count() or 1)
    if progress:
        from tqdm import tqdm

        total = len(image_ids) if isinstance(image_ids, Sized) else None
        results = iter(tqdm(results, total=total, desc="index", unit="file", mininterval=1.0))
    return results


def _scan(image_ids: Iterable[str], dicom_dir: str, workers: int) -> Iterator[HeaderResult]:
    ids = iter(image_ids)
    if workers == 1:
        for image_id in ids:
            yield read_header(image_id, dicom_dir)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers) as pool:
        pending: deque = deque()
        while True:
            while len(pending) < 2 * workers:
                chunk = list(islice(ids, _CHUNK_SIZE))
                if not chunk:
                    break
                pending.append(pool.apply_async(_read_chunk, (chunk, dicom_dir)))
            if not pending:
                return
            yield from pending.popleft().get()


#: Columns of ``data/index.csv``: the image, its labels, and its header fields (:data:`INDEX_COLUMNS`).
TABLE_COLUMNS: tuple[str, ...] = ("ID", *LABELS, *INDEX_COLUMNS[1:])
_TEXT_COLUMNS = ("ID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "split")


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``data/index.csv`` (or a table with its columns, such as ``data/sampled.csv``): identifiers as
    text (empty when absent, never NaN), ``position_z`` as float (NaN when unknown)."""
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {column: str for column in _TEXT_COLUMNS if column in header}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={"position_z": [""]})
    return frame


@dataclass(frozen=True)
class IndexOutcome:
    """What the index stage writes: the ``index`` (:data:`TABLE_COLUMNS`, sorted by ID), the ``quarantine``
    (``ID,reason``: label problems as ``labels: …``, then unreadable or missing files) and ``metrics``."""

    index: pd.DataFrame
    quarantine: pd.DataFrame
    metrics: dict[str, object]
    reasons: Counter


def build_index(labels: pd.DataFrame, label_problems: pd.DataFrame, results: Iterable[HeaderResult], key: bytes | None = None) -> IndexOutcome:
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
