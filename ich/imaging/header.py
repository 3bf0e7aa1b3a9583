"""The one DICOM header reader: where a slice lies (patient, study, series, z) and its size, without its pixels.

The index stage and ``ich predict``'s folder scan both read headers here; :mod:`ich.imaging.dicom` reads whole
slices with the same trust rules (a file without the 'DICM' prefix is believed only if it carries what image
objects carry). pydicom parses only the elements of :data:`HEADER_KEYWORDS` and stops before the pixel data, and
the first 4 KB of the file are read in one call: RSNA's headers end before 2 KB, so a scan of its 752,803 files
reads about 1 KB of each instead of 0.5 MB. Every failure is a reason (:mod:`ich.core.quarantine`), never an
exception.

Most files (a 'DICM' prefix, little-endian uncompressed, a header that ends within those 4 KB) are read by
:func:`ich.imaging.native.read_native`, pydicom's element generator and value converters without ``dcmread``'s
``Dataset``: 0.11 ms a header instead of 0.27 ms, ~60 s of the index stage at RSNA size on 2 cores. Any other
file is read by ``dcmread`` as before; both paths give the same :class:`Header` (tests/unit/imaging).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, MediaStorageDirectoryStorage

from ich.core.quarantine import DICOMDIR, FILE_MISSING, NOT_DICOM, file_unreadable, unreadable_header
from ich.imaging.native import read_native

__all__ = [
    "HEAD_BYTES",
    "HEADER_KEYWORDS",
    "Header",
    "read_header",
    "text_value",
    "position_z",
    "values_unchecked",
    "is_image_dataset",
]

#: The elements read of every header; pydicom skips the values of all others.
HEADER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "Rows",
    "Columns",
)
_TAGS = [Tag(keyword) for keyword in HEADER_KEYWORDS]
#: Bytes read of each file at first; a longer header is parsed again from the file itself.
HEAD_BYTES = 4096


class ElementValues(Protocol):
    """What the readers here take of a dataset: values by keyword (a pydicom ``Dataset``, or a plain mapping)."""

    def get(self, key: str, default: Any = None, /) -> Any: ...


@dataclass(frozen=True)
class Header:
    """What a header says about its slice. Text fields have their padding removed (empty when absent);
    ``position_z`` is ``ImagePositionPatient[2]`` in mm (NaN when absent, malformed or not finite); ``rows`` and
    ``columns`` are 0 when absent; ``has_pixels`` is False when the file ends before any pixel data."""

    sop_instance_uid: str
    patient_id: str
    study_uid: str
    series_uid: str
    position_z: float
    rows: int
    columns: int
    has_pixels: bool


@contextlib.contextmanager
def values_unchecked() -> Iterator[None]:
    """pydicom's checks of value formats off while reading: they only warn (RSNA keeps its IDs in UID
    elements, "ID_...", which fail them on every file) and cost ~10-15 % of a slice's parsing time. The
    values read are the same; what we need of them is checked where it is used."""
    settings = pydicom.config.settings
    mode = settings.reading_validation_mode
    settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode = mode


def is_image_dataset(dataset: Dataset) -> bool:
    """Whether a dataset read without the 'DICM' prefix is believable: it has what every image object carries."""
    return "SOPClassUID" in dataset or "Modality" in dataset


def text_value(dataset: ElementValues, keyword: str) -> str:
    """A header string without padding (some writers keep trailing NULs or spaces); empty when absent."""
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip().strip("\x00").strip()


def position_z(dataset: ElementValues) -> float:
    """``ImagePositionPatient[2]`` as a finite float, else NaN (absent, not three numbers, not a number)."""
    try:
        position = dataset.get("ImagePositionPatient")
        if position is None or isinstance(position, (str, bytes)) or len(position) != 3:
            return math.nan
        value = float(position[2])
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def read_header(path: str | os.PathLike) -> Header | str:
    """Read the header of the DICOM file at ``path``: a :class:`Header`, or the reason the file cannot be used
    (missing, unreadable, not DICOM, a DICOMDIR, a header pydicom cannot parse). Never raises for the file."""
    try:
        with open(path, "rb") as stream, warnings.catch_warnings(), values_unchecked():
            # Damaged headers warn too: what counts is whether the values read. pydicom converts values lazily,
            # so every access stays inside this block.
            warnings.simplefilter("ignore")
            return _read_open(stream)
    except FileNotFoundError:
        return FILE_MISSING
    except OSError as error:
        return file_unreadable(error)
    except Exception as error:  # a damaged header can raise anything from the parser: one file's problem
        return unreadable_header(error)


def _read_open(stream: BinaryIO) -> Header | str:
    size = os.fstat(stream.fileno()).st_size
    head = stream.read(HEAD_BYTES)
    native = read_native(head, HEADER_KEYWORDS)
    if native is not None and native.stopped_at_pixels:
        return _header_of(native.values, native.media_class, has_pixels=True)
    source: BinaryIO = io.BytesIO(head)  # the rest: dcmread
    end = min(size, HEAD_BYTES)
    if size > HEAD_BYTES:
        try:
            dataset = _parse(source)
        except Exception:  # perhaps only cut off by the prefix: the whole file decides below
            dataset = None
        if dataset is not None and _stopped_at_pixels(dataset, source, end):
            return _header(dataset, has_pixels=True)
        stream.seek(0)  # the header runs past the prefix (or is damaged): parse it again from the file itself
        source, end = stream, size
    dataset = _parse(source)
    if dataset is None:
        return NOT_DICOM
    return _header(dataset, has_pixels=_stopped_at_pixels(dataset, source, end))


def _parse(source: BinaryIO) -> Dataset | None:
    """The elements of :data:`HEADER_KEYWORDS`, read up to the pixel data; None when it is not DICOM."""
    try:
        return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=_TAGS)
    except InvalidDicomError:
        source.seek(0)
    try:
        dataset = pydicom.dcmread(source, force=True, stop_before_pixels=True, specific_tags=_TAGS)
    except Exception:  # a random byte stream can raise anything from the parser
        return None
    return dataset if is_image_dataset(dataset) else None


def _stopped_at_pixels(dataset: Dataset, source: BinaryIO, end: int) -> bool:
    """Whether reading stopped at the pixel data rather than at the end of ``source`` (``end`` bytes).

    A deflated dataset is decompressed whole into memory, so its file position tells nothing.
    """
    if dataset.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return True
    return source.tell() < end


def _header(dataset: Dataset, has_pixels: bool) -> Header | str:
    media_class = dataset.file_meta.get("MediaStorageSOPClassUID") if hasattr(dataset, "file_meta") else None
    return _header_of(dataset, media_class, has_pixels)


def _header_of(dataset: ElementValues, media_class: object, has_pixels: bool) -> Header | str:
    if media_class == MediaStorageDirectoryStorage:
        return DICOMDIR
    return Header(
        sop_instance_uid=text_value(dataset, "SOPInstanceUID"),
        patient_id=text_value(dataset, "PatientID"),
        study_uid=text_value(dataset, "StudyInstanceUID"),
        series_uid=text_value(dataset, "SeriesInstanceUID"),
        position_z=position_z(dataset),
        rows=int(dataset.get("Rows", 0) or 0),
        columns=int(dataset.get("Columns", 0) or 0),
        has_pixels=has_pixels,
    )
