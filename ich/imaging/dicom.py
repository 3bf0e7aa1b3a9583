"""DICOM reading for CT slices: stored pixels, Hounsfield units with the RSNA fix, safe header metadata."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from ich.core.quarantine import DICOMDIR, NO_IMAGE_SIZE, NOT_DICOM, short, unreadable_header
from ich.imaging.header import is_image_dataset, position_z, text_value, values_unchecked
from ich.imaging.native import read_native

__all__ = [
    "UnusableSlice",
    "CtSlice",
    "RSNA_PIXEL_FIX_MODES",
    "MAX_SIDE",
    "needs_rsna_fix",
    "apply_rsna_fix",
    "to_hounsfield",
    "read_ct_slice",
]

#: Values of ``preprocess.rsna_pixel_fix``: ``auto`` applies :func:`apply_rsna_fix` where
#: :func:`needs_rsna_fix` says so, ``off`` never rewrites stored values.
RSNA_PIXEL_FIX_MODES: tuple[str, ...] = ("auto", "off")
#: Largest accepted Rows or Columns. CT slices are 512 (rarely 1024) pixels a side; a bigger value is a
#: damaged header, and padding such an image to a square could take gigabytes.
MAX_SIDE = 4096

_NATIVE_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_CT_SOP_CLASSES = {CTImageStorage, EnhancedCTImageStorage, UID("1.2.840.10008.5.1.4.1.1.2.2")}  # + legacy enhanced


class UnusableSlice(Exception):
    """A file that cannot become a training image; the message is the quarantine reason."""


@dataclass(frozen=True)
class CtSlice:
    """One CT slice as stored: ``pixels`` are the raw stored values ``(rows, columns)``, an integer array
    (uint16/int16 as the file stores them, read-only; int32 after the RSNA fix or from a decoder), and
    ``slope``/``intercept`` map them to HU (already corrected by the RSNA fix where it applies)."""

    pixels: np.ndarray
    slope: float
    intercept: float
    metadata: dict[str, object]


def needs_rsna_fix(bits_stored: int, pixel_representation: int, intercept: float) -> bool:
    """True for the RSNA slices whose 12-bit unsigned values wrapped around (public-kernel rule)."""
    return bits_stored == 12 and pixel_representation == 0 and intercept > -100


def apply_rsna_fix(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """Undo the 12-bit wrap: ``x = pixels + 1000; x[x >= 4096] -= 4096``; the intercept becomes -1000.

    Returns:
        ``(fixed pixels as int32, new intercept)``.
    """
    fixed = pixels.astype(np.int32) + 1000
    fixed[fixed >= 4096] -= 4096
    return fixed, -1000.0


def to_hounsfield(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Modality LUT of CT: ``HU = pixels * RescaleSlope + RescaleIntercept`` (float32)."""
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _first_number(value: object, default: float) -> float:
    """A DS/IS value that may be missing or multi-valued (RSNA has both) as one float."""
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if len(value) == 0:
            return default
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def _stored_pixels(dataset: Dataset | _Elements) -> np.ndarray:
    """Stored pixel values as a 2-D integer array (see :class:`CtSlice`); raises :class:`UnusableSlice` with the reason."""
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        raise UnusableSlice(NO_IMAGE_SIZE)
    if max(rows, columns) > MAX_SIDE:
        raise UnusableSlice(f"implausible image size {rows}x{columns} (a CT slice has at most {MAX_SIDE} a side)")
    bits_allocated = int(dataset.get("BitsAllocated", 0) or 0)
    bits_stored = int(dataset.get("BitsStored", bits_allocated) or bits_allocated)
    representation = int(dataset.get("PixelRepresentation", 0) or 0)
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if syntax in _NATIVE_SYNTAXES and bits_allocated == 16 and (representation == 0 or bits_stored == 16):
        # Fast path for plain little-endian 16-bit data (all of RSNA): no copy, no decoder.
        data = dataset.PixelData
        expected = rows * columns * 2
        if len(data) < expected:
            raise UnusableSlice(f"pixel data truncated ({len(data)} bytes, {rows}x{columns} 16-bit needs {expected})")
        # A read-only view of the file's bytes, in the file's 16-bit type (no copy, no widening).
        return np.frombuffer(data, dtype="<i2" if representation else "<u2", count=rows * columns).reshape(rows, columns)
    assert isinstance(dataset, Dataset)  # _read_native_slice reads only what the branch above decodes
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # decoders raise many types; each becomes a quarantine reason
        name = getattr(syntax, "name", str(syntax))
        raise UnusableSlice(f"pixel data could not be decoded ({name}): {short(error)}") from error
    if pixels.ndim != 2:
        raise UnusableSlice(f"pixel array has shape {pixels.shape}, expected one 2-D slice")
    return pixels.astype(np.int32)


def read_ct_slice(data: bytes, image_id: str, rsna_pixel_fix: str = "auto") -> CtSlice:
    """Parse one DICOM file's bytes into a :class:`CtSlice`.

    Args:
        data: the file's bytes.
        image_id: the RSNA ID, kept in the metadata.
        rsna_pixel_fix: ``"auto"`` undoes RSNA's 12-bit wrap where :func:`needs_rsna_fix` holds;
            ``"off"`` keeps the stored values and intercept as they are.

    Raises:
        UnusableSlice: with a specific reason (not DICOM, not CT, colour, multi-frame, no pixels,
            truncated or undecodable pixel data, blank image).
    """
    with values_unchecked():
        return _read_ct_slice(data, image_id, rsna_pixel_fix)


#: The elements a slice is read with (:func:`_read_ct_slice`), besides Pixel Data.
_SLICE_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "Modality",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
)
_DIRECTORY_RECORDS = 0x00041220  # DirectoryRecordSequence: a DICOMDIR, which dcmread reads and _check_is_ct names


class _Elements:
    """What :func:`ich.imaging.native.read_native` read of a slice, with the part of ``Dataset``'s interface that
    :func:`_read_ct_slice` uses (``get``, ``in``, ``file_meta``, ``PixelData``)."""

    def __init__(self, values: dict[str, Any], file_meta: dict[str, Any], pixel_data: bytes) -> None:
        self.values, self.file_meta, self.PixelData = values, file_meta, pixel_data

    def get(self, keyword: str, default: Any = None, /) -> Any:
        return self.values.get(keyword, default)

    def __contains__(self, keyword: str) -> bool:
        return keyword == "PixelData" or keyword in self.values


def _read_native_slice(data: bytes) -> _Elements | None:
    """The slice's elements read by :func:`ich.imaging.native.read_native`, when the file is on the common path and
    its pixels are plain 16-bit (what :func:`_stored_pixels` reads without a decoder); else None (dcmread)."""
    native = read_native(data, _SLICE_KEYWORDS, pixels=True, refuse=(_DIRECTORY_RECORDS,))
    if native is None or native.pixel_data is None:
        return None
    elements = _Elements(
        native.values, {"MediaStorageSOPClassUID": native.media_class, "TransferSyntaxUID": native.syntax}, native.pixel_data
    )
    try:
        bits_allocated = int(elements.get("BitsAllocated", 0) or 0)
        bits_stored = int(elements.get("BitsStored", bits_allocated) or bits_allocated)
        representation = int(elements.get("PixelRepresentation", 0) or 0)
    except (TypeError, ValueError):
        return None
    return elements if bits_allocated == 16 and (representation == 0 or bits_stored == 16) else None


def _parse(data: bytes) -> Dataset:
    """Parse a file, accepting the raw datasets some exporters write without preamble and file meta.

    pydicom reads element values lazily, so restricting the parse to the elements used (``specific_tags``)
    measured no faster on CT headers (0.18 ms per 512 px slice either way)."""
    try:
        return pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as error:
        # No 'DICM' prefix: a bare dataset (old ACR-NEMA style exports) or not DICOM at all. Force-read
        # it, and believe it only if it has the attributes every image object carries.
        try:
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
            if is_image_dataset(dataset):
                _set_transfer_syntax(dataset)
                return dataset
        except Exception:  # a random byte stream can raise anything from the parser
            pass
        raise UnusableSlice(NOT_DICOM) from error
    except Exception as error:  # a damaged header can raise anything from the parser
        raise UnusableSlice(unreadable_header(error)) from error


def _set_transfer_syntax(dataset: Dataset) -> None:
    """Give a dataset read without file meta the (uncompressed) transfer syntax its parser detected."""
    if dataset.file_meta.get("TransferSyntaxUID") is not None:
        return
    implicit, little = dataset.original_encoding
    if implicit is None:
        return
    dataset.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _check_is_ct(dataset: Dataset | _Elements) -> None:
    """Accept CT by Modality, or by SOP Class where Modality is absent; explain anything else."""
    media_class = dataset.file_meta.get("MediaStorageSOPClassUID") if hasattr(dataset, "file_meta") else None
    if media_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in dataset:
        raise UnusableSlice(DICOMDIR)
    modality = str(dataset.get("Modality", "") or "").strip()
    sop_class = str(dataset.get("SOPClassUID") or media_class or "").strip()
    if modality:
        if modality != "CT":
            raise UnusableSlice(f"not a CT image (Modality={modality})")
        return
    if not sop_class:
        raise UnusableSlice("not a CT image (neither Modality nor SOP Class UID present)")
    if UID(sop_class) not in _CT_SOP_CLASSES:
        name = UID(sop_class).name or sop_class
        raise UnusableSlice(f"not a CT image (no Modality; SOP Class is {name})")


def _read_ct_slice(data: bytes, image_id: str, rsna_pixel_fix: str) -> CtSlice:
    if rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
        raise ValueError(f"rsna_pixel_fix must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. Received: {rsna_pixel_fix!r}")
    dataset: Dataset | _Elements | None = _read_native_slice(data)
    if dataset is None:
        dataset = _parse(data)
    _check_is_ct(dataset)
    if "PixelData" not in dataset:
        raise UnusableSlice("no pixel data")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise UnusableSlice(f"colour image (SamplesPerPixel={samples}, {dataset.get('PhotometricInterpretation', '?')})")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnusableSlice(f"multi-frame image (NumberOfFrames={frames}); expected one slice per file")
    try:
        slope = _first_number(dataset.get("RescaleSlope"), 1.0)
        intercept = _first_number(dataset.get("RescaleIntercept"), 0.0)
    except (TypeError, ValueError) as error:
        raise UnusableSlice(f"invalid RescaleSlope/RescaleIntercept: {short(error)}") from error
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise UnusableSlice(f"invalid rescale (slope={slope}, intercept={intercept})")
    pixels = _stored_pixels(dataset)
    bits_stored = int(dataset.get("BitsStored", 16) or 16)
    representation = int(dataset.get("PixelRepresentation", 0) or 0)
    if rsna_pixel_fix == "auto" and needs_rsna_fix(bits_stored, representation, intercept):
        pixels, intercept = apply_rsna_fix(pixels)
    if pixels.min() == pixels.max():
        raise UnusableSlice("blank image (all pixels have the same value)")
    metadata = {
        "ID": image_id,
        "PatientID": text_value(dataset, "PatientID"),
        "StudyInstanceUID": text_value(dataset, "StudyInstanceUID"),
        "SeriesInstanceUID": text_value(dataset, "SeriesInstanceUID"),
        "position_z": position_z(dataset),
        "rows": int(pixels.shape[0]),
        "columns": int(pixels.shape[1]),
    }
    return CtSlice(pixels=pixels, slope=slope, intercept=intercept, metadata=metadata)
