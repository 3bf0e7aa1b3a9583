"""Seeded mutation fuzzing of what reads untrusted files: damaged variants of RSNA-like and real CT slices
through preprocess. Every variant becomes a PNG or a quarantine reason; no exception escapes, nothing is
written outside the output folder, and the stage itself (`dvc repro preprocess`) finishes."""

from __future__ import annotations

import io
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from ich.data.preprocess import process_many
from tests.helpers import ct_dicom_bytes, write_long_csv
from tests.project import copy_repository, dvc

IMAGE_SIZE = 32
# Explicit VR elements whose length field has 4 bytes (after 2 reserved ones); the others have 2.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}
_PIXEL_DATA_TAG = struct.pack("<HH", 0x7FE0, 0x0010)


def _phantom(rows: int, columns: int) -> np.ndarray:
    """Head-like HU map: air -1000 outside, a skull ring of 1000 HU, brain 35 HU, a 70 HU bleed."""
    y, x = np.mgrid[:rows, :columns]
    radius = np.hypot((y - rows / 2) / (rows / 2), (x - columns / 2) / (columns / 2))
    hounsfield = np.full((rows, columns), -1000)
    hounsfield[radius < 0.9] = 1000
    hounsfield[radius < 0.8] = 35
    hounsfield[(radius < 0.3) & (x > columns / 2)] = 70
    return hounsfield


def _ct_small(transfer_syntax=None) -> bytes:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if transfer_syntax is not None:
        dataset.compress(transfer_syntax)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def _base_files() -> dict[str, bytes]:
    """RSNA-like slices (16-bit, BitsStored 12, unsigned, intercept -1024) and real CT from pydicom's corpus."""
    rsna = dict(bits_stored=12, pixel_representation=0)
    return {
        "rsna": ct_dicom_bytes(_phantom(64, 64) + 1024, intercept=-1024.0, **rsna),
        "rsna_nonsquare": ct_dicom_bytes(_phantom(48, 40) + 1024, intercept=-1024.0, **rsna),
        "rsna_wrapped": ct_dicom_bytes(_phantom(64, 64) & 0x0FFF, intercept=0.0, **rsna),  # needs the RSNA fix
        "ct_small": _ct_small(),
        "ct_small_rle": _ct_small(RLELossless),
        "ct_small_j2k": _ct_small(JPEG2000Lossless),
    }


def _elements(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(start, end, VR)`` of the explicit-VR little-endian elements from the file meta on, in file order,
    up to the first one of undefined length (a sequence or encapsulated pixel data, which ends the list)."""
    found, position = [], 132
    while position + 8 <= len(data):
        vr = data[position + 4 : position + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, position + 8) if position + 12 <= len(data) else (0,)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", data, position + 6)
            header = 8
        if length == 0xFFFFFFFF:
            found.append((position, len(data), vr))
            break
        found.append((position, position + header + length, vr))
        position += header + length
    return found


def _pixel_offset(data: bytes) -> int:
    return data.index(_PIXEL_DATA_TAG, 132)


def _set_element(data: bytes, group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """Replace one short-VR element's value in the raw bytes (padded to even length), as a broken writer could."""
    if len(value) % 2:
        value += b" " if vr in (b"DS", b"IS", b"CS") else b"\x00"
    for start, end, found_vr in _elements(data):
        if data[start : start + 4] == struct.pack("<HH", group, element) and found_vr == vr:
            return data[:start] + data[start : start + 6] + struct.pack("<H", len(value)) + value + data[end:]
    return data  # the base file has no such element: the variant stays valid


def _with_transfer_syntax(data: bytes, choose: Callable[[list[str]], str]) -> bytes:
    """The same dataset bytes under a file meta that names another transfer syntax, picked by ``choose``."""
    (group_length,) = struct.unpack_from("<I", data, 140)
    meta_end = 144 + group_length
    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = choose([str(uid) for uid in _LYING_SYNTAXES if uid != meta.TransferSyntaxUID])
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return data[:128] + b"DICM" + buffer.getvalue() + data[meta_end:]


_ABSURD = [
    (0x0028, 0x0010, b"US", struct.pack("<H", 0), "Rows 0"),
    (0x0028, 0x0011, b"US", struct.pack("<H", 0), "Columns 0"),
    (0x0028, 0x0010, b"US", struct.pack("<H", 65535), "Rows 65535"),
    (0x0028, 0x0011, b"US", struct.pack("<H", 65535), "Columns 65535"),
    (0x0028, 0x0010, b"US", struct.pack("<H", 1), "Rows 1"),
    (0x0028, 0x0100, b"US", struct.pack("<H", 7), "BitsAllocated 7"),
    (0x0028, 0x0100, b"US", struct.pack("<H", 0), "BitsAllocated 0"),
    (0x0028, 0x0100, b"US", struct.pack("<H", 32), "BitsAllocated 32"),
    (0x0028, 0x0100, b"US", struct.pack("<H", 8), "BitsAllocated 8"),
    (0x0028, 0x0101, b"US", struct.pack("<H", 0), "BitsStored 0"),
    (0x0028, 0x0101, b"US", struct.pack("<H", 40), "BitsStored 40"),
    (0x0028, 0x0102, b"US", struct.pack("<H", 99), "HighBit 99"),
    (0x0028, 0x0103, b"US", struct.pack("<H", 2), "PixelRepresentation 2"),
    (0x0028, 0x0002, b"US", struct.pack("<H", 0), "SamplesPerPixel 0"),
    (0x0028, 0x0002, b"US", struct.pack("<H", 3), "SamplesPerPixel 3"),
    (0x0028, 0x1053, b"DS", b"nan", "RescaleSlope nan"),
    (0x0028, 0x1053, b"DS", b"abc", "RescaleSlope abc"),
    (0x0028, 0x1053, b"DS", b"0", "RescaleSlope 0"),
    (0x0028, 0x1053, b"DS", b"-inf", "RescaleSlope -inf"),
    (0x0028, 0x1053, b"DS", b"1e300", "RescaleSlope 1e300"),
    (0x0028, 0x1052, b"DS", b"1e400", "RescaleIntercept 1e400"),
    (0x0028, 0x1052, b"DS", b"nan", "RescaleIntercept nan"),
    (0x0028, 0x1052, b"DS", b"abc\\def", "RescaleIntercept abc\\def"),
    (0x0028, 0x1052, b"DS", b"", "RescaleIntercept empty"),
    (0x0028, 0x0004, b"CS", b"PALETTE COLOR", "Photometric PALETTE COLOR"),
    (0x0028, 0x0004, b"CS", b"YBR_FULL_422", "Photometric YBR_FULL_422"),
    (0x0008, 0x0060, b"CS", b"\xff\xfe", "Modality bytes"),
]
_LYING_SYNTAXES = [
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    "1.2.840.10008.1.2.4.201",
    "1.2.3.4.5.6.7",
]


def _truncate(data, rng):
    return data[: int(rng.integers(0, len(data)))]


def _header_bytes(data, rng):
    out = bytearray(data)
    for position in rng.integers(0, _pixel_offset(data) + 12, size=int(rng.integers(1, 5))):
        out[position] = int(rng.integers(0, 256))
    return bytes(out)


def _header_bits(data, rng):
    out = bytearray(data)
    for position in rng.integers(0, _pixel_offset(data) + 12, size=int(rng.integers(1, 5))):
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _vr_byte(data, rng):
    """The damage that once stopped a whole run: one byte of a VR field changed."""
    starts = [start for start, _, _ in _elements(data)]
    out = bytearray(data)
    position = int(rng.choice(starts)) + 4 + int(rng.integers(0, 2))
    out[position] = int(rng.integers(0, 256))
    return bytes(out)


def _pixel_bytes(data, rng):
    start = _pixel_offset(data) + 12
    out = bytearray(data)
    count = int(rng.integers(1, max(2, (len(data) - start) // 50)))
    positions = rng.integers(start, len(data), size=count)
    out_array = np.frombuffer(out, dtype=np.uint8).copy()
    out_array[positions] = rng.integers(0, 256, size=count)
    return out_array.tobytes()


def _pixel_bits(data, rng):
    start = _pixel_offset(data) + 12
    out = np.frombuffer(data, dtype=np.uint8).copy()
    positions = rng.integers(start, len(data), size=int(rng.integers(1, 20)))
    out[positions] ^= (1 << rng.integers(0, 8, size=len(positions))).astype(np.uint8)
    return out.tobytes()


def _absurd_value(data, rng):
    group, element, vr, value, _ = _ABSURD[int(rng.integers(0, len(_ABSURD)))]
    return _set_element(data, group, element, vr, value)


def _dropped_tag(data, rng):
    elements = [(start, end) for start, end, _ in _elements(data) if start >= 132 + 12]
    start, end = elements[int(rng.integers(0, len(elements)))]
    return data[:start] + data[end:]


def _lying_syntax(data, rng):
    return _with_transfer_syntax(data, lambda choices: choices[int(rng.integers(0, len(choices)))])


def _pixel_length(data, rng):
    """PixelData a few bytes longer or shorter than Rows x Columns x BitsAllocated needs, length field included."""
    start = _pixel_offset(data)
    (length,) = struct.unpack_from("<I", data, start + 8)
    change = int(rng.choice([-6, -4, -3, -2, -1, 1, 2, 3, 4, 6]))
    if length == 0xFFFFFFFF:  # encapsulated: damage the end of the last fragment instead
        return data[:change] if change < 0 else data[:-8] + b"\x00" * change + data[-8:]
    value = data[start + 12 : start + 12 + length]
    value = value[:change] if change < 0 else value + bytes(rng.integers(0, 256, size=change, dtype=np.uint8))
    return data[: start + 8] + struct.pack("<I", len(value)) + value + data[start + 12 + length :]


def _garbage_prefix(data, rng):
    return bytes(rng.integers(0, 256, size=int(rng.integers(1, 300)), dtype=np.uint8)) + data


def _empty(data, rng):
    return b""


def _random_bytes(data, rng):
    return bytes(rng.integers(0, 256, size=int(rng.integers(1, 4000)), dtype=np.uint8))


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "truncated": _truncate,
    "header bytes": _header_bytes,
    "header bits": _header_bits,
    "VR byte": _vr_byte,
    "pixel bytes": _pixel_bytes,
    "pixel bits": _pixel_bits,
    "absurd value": _absurd_value,
    "dropped tag": _dropped_tag,
    "lying transfer syntax": _lying_syntax,
    "pixel data length": _pixel_length,
    "garbage prefix": _garbage_prefix,
    "empty": _empty,
    "random bytes": _random_bytes,
}


def damaged_variants(count: int, seed: int) -> list[tuple[str, str, bytes]]:
    """``count`` seeded variants ``(ID, "base: mutation", bytes)``; a fifth get a second mutation on top."""
    rng = np.random.default_rng(seed)
    bases = _base_files()
    names, mutations = list(bases), list(MUTATIONS)
    variants = []
    for number in range(count):
        base = names[number % len(names)]
        mutation = mutations[int(rng.integers(0, len(mutations)))]
        data = MUTATIONS[mutation](bases[base], rng)
        if rng.random() < 0.2 and len(data) > 200:
            second = mutations[int(rng.integers(0, len(mutations)))]
            try:
                data = MUTATIONS[second](data, rng)
                mutation = f"{mutation} + {second}"
            except Exception:  # the first damage broke what the second one parses for (its offsets, the file meta)
                pass
        variants.append((f"ID_{number:06x}", f"{base}: {mutation}", data))
    return variants


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def _fuzz(tmp_path: Path, count: int, seed: int) -> None:
    dicom_dir, png_dir = tmp_path / "dicom", tmp_path / "png"
    dicom_dir.mkdir()
    variants = damaged_variants(count, seed)
    for image_id, _, data in variants:
        (dicom_dir / f"{image_id}.dcm").write_bytes(data)
    ids = [image_id for image_id, _, _ in variants]
    before = _files(tmp_path)

    # The stage's path: worker processes with a time limit per file.
    results = list(process_many(ids, dicom_dir, png_dir, IMAGE_SIZE, workers=2, file_timeout_s=30))

    outcomes: Counter = Counter()
    for (image_id, kind, _), result in zip(variants, results, strict=True):
        assert result.image_id == image_id
        if result.reason is None:
            assert result.metadata is not None and result.metadata["ID"] == image_id
            png = cv2.imread(str(png_dir / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
            assert png is not None and png.shape == (IMAGE_SIZE, IMAGE_SIZE, 3), (kind, image_id)
            outcomes[(kind.split(" + ")[0].split(": ")[1], "PNG")] += 1
        else:
            assert isinstance(result.reason, str) and result.reason.strip(), (kind, image_id)
            assert len(result.reason) <= 200 and "\n" not in result.reason
            assert not (png_dir / f"{image_id}.png").exists(), (kind, image_id)
            outcomes[(kind.split(" + ")[0].split(": ")[1], result.reason[:50])] += 1
    report = "\n".join(f"{count:5d}  {mutation:22s} -> {outcome}" for (mutation, outcome), count in sorted(outcomes.items()))
    assert len(results) == len(ids), report
    expected_pngs = {png_dir / f"{result.image_id}.png" for result in results if result.reason is None}
    assert _files(tmp_path) - before == expected_pngs, report  # nothing else, no temporary leftovers
    written = sum(count for (_, outcome), count in outcomes.items() if outcome == "PNG")
    # Damage that leaves the image decodable (a flipped pixel bit) must still give images, or the check is void.
    assert 0 < written < len(ids), report
    assert len({outcome for (_, outcome) in outcomes if outcome != "PNG"}) >= 15, report

    # In this process (no time limit, no worker) the same files give the same results.
    again = process_many(ids[:300], dicom_dir, tmp_path / "png-again", IMAGE_SIZE, workers=1)
    assert [repr((one.reason, one.metadata)) for one in again] == [repr((one.reason, one.metadata)) for one in results[:300]]


def test_every_mutation_applies_to_every_base_file():
    rng = np.random.default_rng(0)
    for base, data in _base_files().items():
        for name, mutate in MUTATIONS.items():
            damaged = mutate(data, rng)
            assert damaged != data or name == "absurd value", (base, name)


def test_damaged_files_become_pngs_or_reasons(tmp_path):
    _fuzz(tmp_path, count=2000, seed=2019)


@pytest.mark.slow
def test_damaged_files_become_pngs_or_reasons_many(tmp_path):
    _fuzz(tmp_path, count=20_000, seed=7)


def test_damaged_files_through_dvc_repro_preprocess(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    variants = damaged_variants(300, seed=11)
    for image_id, _, data in variants:
        (raw / f"{image_id}.dcm").write_bytes(data)
    write_long_csv(tmp_path / "labels.csv", {image_id: {} for image_id, _, _ in variants})
    project = copy_repository(
        tmp_path / "repo",
        {
            "data": {"labels_csv": str(tmp_path / "labels.csv"), "dicom_dir": str(raw)},
            "sample": {"per_label": 10_000},
            "preprocess": {"image_size": IMAGE_SIZE, "max_quarantine_fraction": 1.0, "file_timeout_s": 30},
        },
    )
    result = dvc("repro", "preprocess", cwd=project, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    metadata = pd.concat(  # the per-split tables: every processed image, once
        [pd.read_csv(project / f"data/split/{name}.csv", dtype=str, keep_default_na=False) for name in ("train", "val", "test")]
    )
    quarantine = pd.read_csv(project / "data/quarantine.csv", dtype=str, keep_default_na=False)
    pngs = {path.stem for path in (project / "data/png").glob("*.png")}
    ids = {image_id for image_id, _, _ in variants}
    assert set(metadata["ID"]) == pngs and not pngs & set(quarantine["ID"])
    assert pngs | set(quarantine["ID"]) == ids and len(metadata) + len(quarantine) == len(ids)
    assert quarantine["reason"].str.len().min() > 0
    assert 0 < len(pngs) < len(ids), quarantine["reason"].value_counts().head(20).to_string()
    assert all(
        cv2.imread(str(project / "data/png" / f"{image_id}.png")).shape == (IMAGE_SIZE, IMAGE_SIZE, 3) for image_id in pngs
    )
