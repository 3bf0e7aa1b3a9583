"""The common case read quickly: a DICOM file with the 'DICM' prefix in a little-endian uncompressed syntax, read
element by element with pydicom's own element generator and value converters.

``pydicom.dcmread`` checks the file meta, builds a ``Dataset`` and converts each value through it on access; for
the handful of elements the index and preprocess stages need that is most of their time per file. Here the same
generator (``pydicom.filereader.data_element_generator``) reads only the wanted elements and the same converter
(``pydicom.values.convert_value``) gives their values, so a value is what ``Dataset.get`` would give. Measured on
the RSNA-size set's 64 px slices, in one process on this project's 2-core benchmark machine: a header in 0.11 ms
instead of 0.27 ms, and a whole preprocess step (read, render at 256 px, PNG) in 0.79 ms instead of 0.95 ms;
``benchmarks/rsna_size.py`` shows the effect on the index and preprocess stages.

Anything off the common path gives None, and the caller reads the file with ``dcmread``: no prefix, another
transfer syntax, VRs encoded otherwise than the syntax says (pydicom detects and follows that), an element stored
with another VR than the standard's (pydicom converts those by rules of its own), pixel data of undefined length,
or a parser error. The caller's results are then the same either way; tests compare the two paths.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.values import convert_value

__all__ = ["NativeElements", "read_native"]

_PREFIX = 132  # the 128-byte preamble and 'DICM'
_IMPLICIT = {str(ImplicitVRLittleEndian): True, str(ExplicitVRLittleEndian): False}
_PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, _PIXEL_DATA})  # where stop_before_pixels stops
_CHARSET, _SYNTAX, _MEDIA_CLASS = 0x00080005, 0x00020010, 0x00020002
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFAULT_ENCODING = "iso8859"  # pydicom's, where no Specific Character Set is given
# Two bytes after a tag that name a VR mean explicit VR: the check pydicom's reader makes on the first element.
_VRS = frozenset(
    vr.encode()
    for vr in "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)


@dataclass(frozen=True)
class NativeElements:
    """What :func:`read_native` read: ``values`` by keyword (the wanted elements present in the file), the transfer
    ``syntax`` (a UID), ``media_class`` (the file meta's Media Storage SOP Class UID, or None), ``pixel_data`` (the Pixel Data bytes
    when asked for and present) and ``stopped_at_pixels`` (reading reached pixel data before the end of the bytes)."""

    values: dict[str, Any]
    syntax: str
    media_class: str | None
    pixel_data: bytes | None
    stopped_at_pixels: bool


class _OffPath(Exception):
    """The file leaves the common path; ``dcmread`` reads it."""


@cache
def _tags(keywords: tuple[str, ...]) -> tuple[tuple[str, BaseTag], ...]:
    return tuple((keyword, Tag(keyword)) for keyword in keywords)


def _stop_at_group_end(tag: int, vr: str | None, length: int) -> bool:
    return tag >> 16 != 2


def _stop_at_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag in _PIXEL_TAGS


def _stop_after_pixels(tag: int, vr: str | None, length: int) -> bool:
    return tag > _PIXEL_DATA


def read_native(
    data: bytes, keywords: Sequence[str], *, pixels: bool = False, refuse: Collection[int] = ()
) -> NativeElements | None:
    """Read the elements named by ``keywords`` from a file's bytes (or its first bytes), or None off the common path.

    Args:
        data: the file's bytes, or as many as were read of it.
        keywords: the elements wanted, by pydicom keyword.
        pixels: read on through Pixel Data and return its bytes; otherwise stop where pixel data begins.
        refuse: tags whose presence sends the file to ``dcmread`` (elements the caller would need read in full).
    """
    try:
        return _read(data, _tags(tuple(keywords)), pixels, refuse)
    except Exception:  # _OffPath, or a parser error on a damaged file: dcmread decides, with its own reasons
        return None


def _read(data: bytes, wanted: tuple[tuple[str, BaseTag], ...], pixels: bool, refuse: Collection[int]) -> NativeElements | None:
    if data[128:_PREFIX] != b"DICM":
        return None
    source = io.BytesIO(data)
    source.seek(_PREFIX)
    meta: dict[int, Any] = {raw.tag: raw for raw in data_element_generator(source, False, True, stop_when=_stop_at_group_end)}
    syntax = _value(meta.get(_SYNTAX), _DEFAULT_ENCODING)
    implicit = _IMPLICIT.get(str(syntax or "").strip("\x00 "))
    start = source.tell()
    if implicit is None or (data[start + 4 : start + 6] in _VRS) == implicit:
        return None
    tags = [tag for _, tag in wanted] + list(refuse) + ([_PIXEL_DATA] if pixels else [])
    stop = _stop_after_pixels if pixels else _stop_at_pixels
    elements: dict[int, Any] = {
        raw.tag: raw for raw in data_element_generator(source, implicit, True, stop_when=stop, specific_tags=tags)
    }
    if any(tag in elements for tag in refuse):
        return None
    encoding: str | list[str] = _DEFAULT_ENCODING
    if _CHARSET in elements:
        encoding = convert_encodings(_value(elements[_CHARSET], encoding))
    values = {keyword: _value(elements[tag], encoding) for keyword, tag in wanted if tag in elements}
    pixel_data = None
    if pixels and _PIXEL_DATA in elements:
        raw = elements[_PIXEL_DATA]
        if raw.length == _UNDEFINED_LENGTH or not isinstance(raw.value, bytes):
            return None  # encapsulated (compressed) data in a native syntax: dcmread says what it is
        pixel_data = raw.value
    media_class = _value(meta.get(_MEDIA_CLASS), _DEFAULT_ENCODING)
    return NativeElements(
        values=values,
        syntax=str(syntax).strip("\x00 "),
        media_class=None if media_class is None else str(media_class),
        pixel_data=pixel_data,
        stopped_at_pixels=source.tell() < len(data),
    )


def _value(raw: RawDataElement | None, encoding: str | list[str]) -> Any:
    """An element's value as ``Dataset.get`` gives it (None when absent)."""
    if raw is None:
        return None
    vr = dictionary_VR(raw.tag)
    if raw.VR is not None and raw.VR != vr:
        raise _OffPath(f"{raw.tag} stored as {raw.VR}, not {vr}")
    return convert_value(vr, raw, encoding)  # what Dataset's raw-element hook does for a standard VR
