"""The folder scan of ``ich predict``: every file under a folder, its header read (in parallel, no pixel data) for its
image ID, series (``SeriesInstanceUID``) and slice position (``ImagePositionPatient[2]``), the usable files put in
prediction order and the others quarantined with the reason.

Image IDs: the file's name (without ``.dcm``) when it is an RSNA ID (``ID_<hex>``, as in Kaggle's
``stage_2_test/``), else its ``SOPInstanceUID`` when that is an RSNA ID or a valid DICOM UID (digits and dots, at
most 64 characters). A file with neither, a second file with an ID already taken, and a file without a
``SeriesInstanceUID`` are quarantined with the reason; untrusted header text never becomes a path.

Memory: one :class:`DicomFile` (paths and header strings) per file, never pixels.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ich.core.errors import PipelineError
from ich.core.ids import is_valid_id
from ich.core.pool import TaskFailure, map_in_order
from ich.data.context import series_order
from ich.imaging.header import read_header

__all__ = [
    "QUARANTINE_COLUMNS",
    "DicomFile",
    "Scan",
    "is_dicom_uid",
    "image_id_for",
    "find_files",
    "read_file_header",
    "scan_folder",
]

#: A DICOM UID (PS3.5 9.1): numeric components without leading zeros, separated by dots, at most 64 characters.
_DICOM_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
_MAX_UID_LENGTH = 64
_SCAN_CHUNK = 64  # files per task of the header scan
#: The columns of a prediction run's quarantine table.
QUARANTINE_COLUMNS: list[str] = ["ID", "reason", "file"]


def is_dicom_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID: digits and dots only, no empty or zero-padded component, at
    most 64 characters. Such a string is also a safe file name (no separator, never ``.`` or ``..``)."""
    return isinstance(value, str) and len(value) <= _MAX_UID_LENGTH and _DICOM_UID.fullmatch(value) is not None


def image_id_for(file_stem: str, sop_instance_uid: str) -> str | None:
    """The image ID of a file: its stem when that is an RSNA ID, else its ``SOPInstanceUID`` when that is an RSNA
    ID or a valid DICOM UID, else None (the file cannot be named safely)."""
    if is_valid_id(file_stem):
        return file_stem
    if is_valid_id(sop_instance_uid) or is_dicom_uid(sop_instance_uid):
        return sop_instance_uid
    return None


@dataclass(frozen=True)
class DicomFile:
    """One usable file of the folder: where it is, its image ID, and where it lies (patient, study, series, z in mm;
    NaN when the header has no position)."""

    path: str
    relative: str
    image_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    position_z: float


@dataclass(frozen=True)
class Scan:
    """The folder after the header scan: the usable ``files`` in prediction order (series by UID, each in z
    order), the ``quarantine`` so far (``ID,reason,file``) and how many files were ``found``."""

    files: list[DicomFile]
    quarantine: pd.DataFrame
    found: int


def find_files(folder: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every regular file under ``folder`` (recursively, symlinked folders not followed), sorted by path. Hidden
    files and folders (names starting with ``.``) and the folder ``exclude`` (the output folder, when it lies
    inside ``folder``) are skipped."""
    root = Path(folder)
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    for directory, folders, names in os.walk(root):
        here = Path(directory)
        folders[:] = sorted(name for name in folders if not name.startswith(".") and (here / name).resolve() != skip)
        found.extend(here / name for name in names if not name.startswith(".") and (here / name).is_file())
    return sorted(found)


def read_file_header(path: str) -> dict[str, object] | str:
    """Read one file's header (:func:`ich.imaging.header.read_header`): a dict (``image_id``, ``patient_id``,
    ``study_uid``, ``series_uid``, ``position_z``) or the reason the file cannot be used. Never raises for anything
    in the file."""
    header = read_header(path)
    if isinstance(header, str):
        return header
    image_id = image_id_for(Path(path).name.removesuffix(".dcm"), header.sop_instance_uid)
    if image_id is None:
        what = "missing" if not header.sop_instance_uid else "not a valid DICOM UID"
        return f"no usable image ID: the file name is not an RSNA ID (ID_<hex>) and its SOPInstanceUID is {what}"
    series_uid = header.series_uid
    if not series_uid or len(series_uid) > _MAX_UID_LENGTH or not series_uid.isprintable():
        what = "missing" if not series_uid else "not a printable UID of at most 64 characters"
        return f"SeriesInstanceUID {what}: the slice cannot be placed in its series"
    return {
        "image_id": image_id,
        "patient_id": header.patient_id,
        "study_uid": header.study_uid,
        "series_uid": series_uid,
        "position_z": header.position_z,
    }


def _read_chunk(paths: list[str]) -> list[dict[str, object] | str]:
    return [read_file_header(path) for path in paths]


def _headers(paths: list[str], workers: int, progress: bool) -> Iterator[dict[str, object] | str]:
    """:func:`read_file_header` of every path, in order, in the worker pool of :mod:`ich.core.pool` (1: in this
    process). A chunk whose worker dies is read again one file a task, so only the culprit is quarantined."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="scan", unit="file", mininterval=1.0, file=sys.stderr)
    chunks = [paths[start : start + _SCAN_CHUNK] for start in range(0, len(paths), _SCAN_CHUNK)]
    try:
        in_process = workers == 1 or len(chunks) < 2
        for chunk in map_in_order(_read_chunk, chunks, workers=workers, window=2 * workers, in_process=in_process):
            if isinstance(chunk, TaskFailure):
                singles = map_in_order(_read_chunk, ([path] for path in chunk.item), workers=1)
                chunk = [single.reason if isinstance(single, TaskFailure) else single[0] for single in singles]
            if bar is not None:
                bar.update(len(chunk))
            yield from chunk
    finally:
        if bar is not None:
            bar.close()


def scan_folder(
    folder: str | os.PathLike, workers: int = 0, exclude: str | os.PathLike | None = None, progress: bool = False
) -> Scan:
    """Find every file under ``folder`` and read its header: the usable files in prediction order, and the others
    (not DICOM, no usable image ID, no series, an ID already taken by an earlier file) as quarantine rows.

    Raises:
        PipelineError: ``folder`` is not a folder, or none of its files is DICOM.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PipelineError(
            f"The DICOM folder {str(root)!r} does not exist or is not a folder. Pass the folder that holds the .dcm files."
        )
    paths = find_files(root, exclude)
    headers = list(_headers([str(path) for path in paths], workers or os.cpu_count() or 1, progress))
    files: list[DicomFile] = []
    quarantine: list[dict[str, str]] = []
    first_file: dict[str, str] = {}
    for path, header in zip(paths, headers):
        relative = path.relative_to(root).as_posix()
        if isinstance(header, str):
            quarantine.append({"ID": "", "reason": header, "file": relative})
            continue
        image_id = str(header["image_id"])
        if image_id in first_file:
            quarantine.append(
                {"ID": image_id, "reason": f"duplicate image ID: {first_file[image_id]} has it too and is used", "file": relative}
            )
            continue
        first_file[image_id] = relative
        files.append(
            DicomFile(
                path=str(path),
                relative=relative,
                image_id=image_id,
                patient_id=str(header["patient_id"]),
                study_uid=str(header["study_uid"]),
                series_uid=str(header["series_uid"]),
                position_z=float(header["position_z"]),  # type: ignore[arg-type]
            )
        )
    not_dicom = sum(reason.startswith("not a DICOM file") for reason in (entry["reason"] for entry in quarantine))
    if len(paths) - not_dicom == 0:
        raise PipelineError(
            f"No DICOM files found in {str(root)!r} ({len(paths)} files searched, recursively; hidden files skipped). "
            "Pass the folder that holds the CT slices (e.g. Kaggle's stage_2_test/)."
        )
    files.sort(key=lambda item: item.series_uid)
    order = series_order(
        [item.series_uid for item in files], [item.position_z for item in files], [item.image_id for item in files]
    )
    return Scan([files[index] for index in order], pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS), len(paths))
