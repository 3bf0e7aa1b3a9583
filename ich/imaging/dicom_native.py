"""A fast reader for the plain CT slice: uncompressed little-endian 16-bit data with a regular header.

pydicom builds a full :class:`~pydicom.dataset.Dataset` and converts each value through its hooks, ~0.5 ms of
Python per slice, a quarter of the preprocess stage's time per file. Nearly every CT slice (all of RSNA's) is
the simple case: a 128-byte preamble, ``DICM``, explicit or implicit VR little endian, a flat header and the
pixel data last. :func:`read_native_slice` walks such a file's elements once, keeps the fifteen it needs, and
returns what :func:`ich.imaging.dicom.read_ct_slice`'s pydicom path would read, or ``None`` for anything else: any sequence or undefined length, another transfer syntax or bit depth, a value
it would have to interpret (non-ASCII text, several values where one is expected, a number in an unusual
spelling), trailing data after the pixels, and every file that is not a usable slice. ``read_ct_slice`` then
reads the file with pydicom, which gives the reasons, so the fast path can only ever accept a file pydicom
accepts, with the same values (``tests/test_dicom_native.py`` compares both on real, synthetic and damaged
files).
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass

import numpy as np
from pydicom.datadict import DicomDictionary
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MediaStorageDirectoryStorage

__all__ = ["NativeSlice", "read_native_slice"]

_VRS = frozenset(
    vr.encode() for vr in "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)

_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_IMPLICIT = {ExplicitVRLittleEndian.encode(): False, ImplicitVRLittleEndian.encode(): True}
_DICOMDIR = MediaStorageDirectoryStorage.encode()
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_MODALITY, _PATIENT_ID = 0x00080060, 0x00100020
_STUDY_UID, _SERIES_UID, _POSITION = 0x0020000D, 0x0020000E, 0x00200032
_SAMPLES, _FRAMES, _ROWS, _COLUMNS = 0x00280002, 0x00280008, 0x00280010, 0x00280011
_BITS_ALLOCATED, _BITS_STORED, _REPRESENTATION = 0x00280100, 0x00280101, 0x00280103
_INTERCEPT, _SLOPE, _DIRECTORY_RECORDS = 0x00281052, 0x00281053, 0x00041220
_KEPT = frozenset({
    _MODALITY, _PATIENT_ID, _STUDY_UID, _SERIES_UID, _POSITION, _SAMPLES, _FRAMES, _ROWS, _COLUMNS,
    _BITS_ALLOCATED, _BITS_STORED, _REPRESENTATION, _INTERCEPT, _SLOPE, _DIRECTORY_RECORDS,
})
_US_TAGS = frozenset({_SAMPLES, _ROWS, _COLUMNS, _BITS_ALLOCATED, _BITS_STORED, _REPRESENTATION})
_DECIMAL = re.compile(rb" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")
_INTEGER = re.compile(rb" *[+-]?[0-9]+ *")
_PRINTABLE = re.compile(rb"[ -\[\]-~]*")  # printable ASCII without the value separator "\"
_UNPACK_TAG, _UNPACK_SHORT, _UNPACK_LONG = struct.Struct("<HH").unpack_from, struct.Struct("<H").unpack_from, struct.Struct("<I").unpack_from


class _Irregular(Exception):
    """A value the fast path does not interpret: pydicom reads the file instead."""


def _elements(data: bytes, at: int, implicit: bool, meta: bool) -> tuple[dict[int, tuple[bytes, bytes]], int]:
    """Walk a flat run of elements from offset ``at``: ``({tag: (VR or b"", value bytes)} of the kept tags
    (all of group 2 when ``meta``), offset of the element where the walk stopped)``. Stops at the pixel data,
    at the end of the file meta (``meta``), or at the end; raises :class:`_Irregular` for anything else."""
    kept: dict[int, tuple[bytes, bytes]] = {}
    end = len(data)
    while at < end:
        if at + 8 > end:
            raise _Irregular
        group, element = _UNPACK_TAG(data, at)
        tag = group << 16 | element
        if meta and group != 2:
            return kept, at
        if tag == _PIXEL_DATA:
            return kept, at
        if implicit:
            vr, length, start = b"", _UNPACK_LONG(data, at + 4)[0], at + 8
            if group & 1 == 0 and (entry := DicomDictionary.get(tag)) is not None and "SQ" in entry[0]:
                raise _Irregular  # a sequence: its items would be parsed
        else:
            vr = data[at + 4 : at + 6]
            if vr not in _VRS or vr == b"SQ":
                raise _Irregular  # a sequence, or implicit VR inside an explicit file
            if vr in _LONG_LENGTH_VRS:
                if at + 12 > end:
                    raise _Irregular
                length, start = _UNPACK_LONG(data, at + 8)[0], at + 12
            else:
                length, start = _UNPACK_SHORT(data, at + 6)[0], at + 8
        if length == _UNDEFINED or start + length > end:
            raise _Irregular
        if meta or tag in _KEPT:
            if tag in kept:
                raise _Irregular  # the same element twice
            kept[tag] = (vr, data[start : start + length])
        at = start + length
    return kept, at


def _text(raw: bytes | None) -> str:
    """A single text value as pydicom reads it (trailing spaces and NULs removed); printable ASCII only."""
    value = (raw or b"").rstrip(b"\0 ")
    if not _PRINTABLE.fullmatch(value):
        raise _Irregular
    return value.decode("ascii")


def _unsigned_short(value: tuple[bytes, bytes] | None, default: int) -> int:
    """A US value (``default`` when absent or empty, or zero as pydicom's ``or default`` gives)."""
    if value is None:
        return default
    vr, raw = value
    if vr not in (b"", b"US") or len(raw) not in (0, 2):
        raise _Irregular
    return (_UNPACK_SHORT(raw)[0] if raw else 0) or default


def _decimals(raw: bytes | None) -> list[float]:
    """The values of a DS element in their plain spellings (empty list when absent or empty)."""
    value = (raw or b"").rstrip(b"\0 ")
    if not value:
        return []
    parts = value.split(b"\\")
    if not all(_DECIMAL.fullmatch(part) for part in parts):
        raise _Irregular
    return [float(part) for part in parts]


@dataclass(frozen=True)
class NativeSlice:
    """What the header and pixel data of a plain slice say: ``pixels`` (a read-only ``(rows, columns)``
    uint16/int16 view of the file's bytes), ``slope``/``intercept`` as stored, ``bits_stored``,
    ``representation`` (PixelRepresentation) and the :data:`ich.imaging.dicom.METADATA_COLUMNS` values but ``ID``."""

    pixels: np.ndarray
    slope: float
    intercept: float
    bits_stored: int
    representation: int
    metadata: dict[str, object]


def read_native_slice(data: bytes, max_side: int) -> NativeSlice | None:
    """A plain, usable CT slice's :class:`NativeSlice`, or ``None`` (see the module docstring).

    Args:
        data: the file's bytes.
        max_side: the largest Rows or Columns accepted.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    try:
        meta, at = _elements(data, 132, implicit=False, meta=True)
        syntax = meta.get(0x00020010, (b"", b""))[1].rstrip(b"\0 ")
        if syntax not in _IMPLICIT or meta.get(0x00020002, (b"", b""))[1].rstrip(b"\0 ") == _DICOMDIR:
            return None
        implicit = _IMPLICIT[syntax]
        kept, at = _elements(data, at, implicit=implicit, meta=False)
        if at >= len(data) or _DIRECTORY_RECORDS in kept:
            return None  # no pixel data, or a DICOMDIR
        # The pixel data element: OW/OB, a defined length, and nothing after it.
        if implicit:
            length, start = _UNPACK_LONG(data, at + 4)[0], at + 8
        else:
            if data[at + 4 : at + 6] not in (b"OW", b"OB") or at + 12 > len(data):
                return None
            length, start = _UNPACK_LONG(data, at + 8)[0], at + 12
        if length == _UNDEFINED or start + length != len(data):
            return None
        value = {tag: raw for tag, (_, raw) in kept.items()}
        if _text(value.get(_MODALITY)) != "CT":
            return None
        if _unsigned_short(kept.get(_SAMPLES), 1) != 1:
            return None
        frames = (value.get(_FRAMES) or b"").rstrip(b"\0 ")
        if frames and not (_INTEGER.fullmatch(frames) and int(frames) in (0, 1)):
            return None
        slope = (_decimals(value.get(_SLOPE)) or [1.0])[0]
        intercept = (_decimals(value.get(_INTERCEPT)) or [0.0])[0]
        if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
            return None
        rows, columns = _unsigned_short(kept.get(_ROWS), 0), _unsigned_short(kept.get(_COLUMNS), 0)
        if not (0 < rows <= max_side and 0 < columns <= max_side):
            return None
        bits_allocated = _unsigned_short(kept.get(_BITS_ALLOCATED), 0)
        bits_stored = _unsigned_short(kept.get(_BITS_STORED), bits_allocated)
        representation = _unsigned_short(kept.get(_REPRESENTATION), 0)
        if bits_allocated != 16 or not (representation == 0 or bits_stored == 16) or length < rows * columns * 2:
            return None
        position = _decimals(value.get(_POSITION))
        metadata = {
            "PatientID": _text(value.get(_PATIENT_ID)),
            "StudyInstanceUID": _text(value.get(_STUDY_UID)),
            "SeriesInstanceUID": _text(value.get(_SERIES_UID)),
            "position_z": position[2] if len(position) == 3 else math.nan,
            "rows": rows,
            "columns": columns,
        }
    except _Irregular:
        return None
    pixels = np.frombuffer(data, dtype="<i2" if representation else "<u2", count=rows * columns, offset=start)
    return NativeSlice(pixels.reshape(rows, columns), slope, intercept, bits_stored, representation, metadata)
