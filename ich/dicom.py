"""DICOM reading for CT slices: stored pixels, Hounsfield units with the RSNA fix, safe header metadata."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

__all__ = [
    "UnusableSlice",
    "CtSlice",
    "needs_rsna_fix",
    "apply_rsna_fix",
    "to_hounsfield",
    "read_ct_slice",
    "METADATA_COLUMNS",
]

#: Header fields kept in ``data/metadata.csv``. Identifying tags (names, dates, institution) never are.
METADATA_COLUMNS: tuple[str, ...] = (
    "ID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "position_z",
    "rows",
    "columns",
)

_NATIVE_SYNTAXES = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


class UnusableSlice(Exception):
    """A file that cannot become a training image; the message is the quarantine reason."""


@dataclass(frozen=True)
class CtSlice:
    """One CT slice as stored: ``pixels`` are the raw stored values ``(rows, columns)`` (int32), and
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


def _stored_pixels(dataset: Dataset) -> np.ndarray:
    """Stored pixel values as a 2-D int32 array; raises :class:`UnusableSlice` with the reason."""
    rows, columns = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    if rows <= 0 or columns <= 0:
        raise UnusableSlice("no image size (Rows/Columns missing or zero)")
    bits_allocated = int(dataset.get("BitsAllocated", 0) or 0)
    bits_stored = int(dataset.get("BitsStored", bits_allocated) or bits_allocated)
    representation = int(dataset.get("PixelRepresentation", 0) or 0)
    syntax = dataset.file_meta.get("TransferSyntaxUID") if hasattr(dataset, "file_meta") else None
    if (
        syntax in _NATIVE_SYNTAXES
        and bits_allocated == 16
        and (representation == 0 or bits_stored == 16)
    ):
        # Fast path for plain little-endian 16-bit data (all of RSNA): no copy, no decoder.
        data = dataset.PixelData
        expected = rows * columns * 2
        if len(data) < expected:
            raise UnusableSlice(
                f"pixel data truncated ({len(data)} bytes, {rows}x{columns} 16-bit needs {expected})"
            )
        pixels = np.frombuffer(data, dtype="<i2" if representation else "<u2", count=rows * columns)
        return pixels.reshape(rows, columns).astype(np.int32)
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # decoders raise many types; each becomes a quarantine reason
        name = getattr(syntax, "name", str(syntax))
        raise UnusableSlice(f"pixel data could not be decoded ({name}): {_short(error)}") from error
    if pixels.ndim != 2:
        raise UnusableSlice(f"pixel array has shape {pixels.shape}, expected one 2-D slice")
    return pixels.astype(np.int32)


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_ct_slice(data: bytes, image_id: str) -> CtSlice:
    """Parse one DICOM file's bytes into a :class:`CtSlice`.

    Raises:
        UnusableSlice: with a specific reason (not DICOM, not CT, colour, multi-frame, no pixels,
            truncated or undecodable pixel data, blank image).
    """
    with warnings.catch_warnings():
        # RSNA keeps its IDs in UID elements ("ID_..."), which pydicom would warn about on every file.
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        return _read_ct_slice(data, image_id)


def _read_ct_slice(data: bytes, image_id: str) -> CtSlice:
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError as error:
        raise UnusableSlice(f"not a DICOM file: {_short(error)}") from error
    except Exception as error:  # a damaged header can raise anything from the parser
        raise UnusableSlice(f"unreadable DICOM header: {_short(error)}") from error
    modality = str(dataset.get("Modality", "") or "")
    if modality and modality != "CT":
        raise UnusableSlice(f"not a CT image (Modality={modality})")
    if "PixelData" not in dataset:
        raise UnusableSlice("no pixel data")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise UnusableSlice(
            f"colour image (SamplesPerPixel={samples}, {dataset.get('PhotometricInterpretation', '?')})"
        )
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise UnusableSlice(f"multi-frame image (NumberOfFrames={frames}); expected one slice per file")
    try:
        slope = _first_number(dataset.get("RescaleSlope"), 1.0)
        intercept = _first_number(dataset.get("RescaleIntercept"), 0.0)
    except (TypeError, ValueError) as error:
        raise UnusableSlice(f"invalid RescaleSlope/RescaleIntercept: {_short(error)}") from error
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise UnusableSlice(f"invalid rescale (slope={slope}, intercept={intercept})")
    pixels = _stored_pixels(dataset)
    bits_stored = int(dataset.get("BitsStored", 16) or 16)
    representation = int(dataset.get("PixelRepresentation", 0) or 0)
    if needs_rsna_fix(bits_stored, representation, intercept):
        pixels, intercept = apply_rsna_fix(pixels)
    if pixels.min() == pixels.max():
        raise UnusableSlice("blank image (all pixels have the same value)")
    position = dataset.get("ImagePositionPatient")
    try:
        position_z = float(position[2]) if position is not None and len(position) == 3 else math.nan
    except (TypeError, ValueError):
        position_z = math.nan
    metadata = {
        "ID": image_id,
        "PatientID": str(dataset.get("PatientID", "") or ""),
        "StudyInstanceUID": str(dataset.get("StudyInstanceUID", "") or ""),
        "SeriesInstanceUID": str(dataset.get("SeriesInstanceUID", "") or ""),
        "position_z": position_z,
        "rows": int(pixels.shape[0]),
        "columns": int(pixels.shape[1]),
    }
    return CtSlice(pixels=pixels, slope=slope, intercept=intercept, metadata=metadata)
