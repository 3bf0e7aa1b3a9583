"""ich.imaging.dicom_native against pydicom: every file either takes the fast path with pydicom's values, or goes to
pydicom (which gives the reasons)."""

import io
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian

import ich.imaging.dicom
from ich.imaging.dicom import MAX_SIDE, UnusableSlice, read_ct_slice
from ich.imaging.dicom_native import read_native_slice
from ich.core.params import SynthesizeParams
from ich.data.synth import generate
from tests.helpers import ct_dicom_bytes
from tests.test_fuzz import damaged_variants


def _outcome(data: bytes) -> tuple:
    """What read_ct_slice makes of a file: the slice's fields, or the exception's type and message."""
    try:
        ct = read_ct_slice(data, "ID_ab")
    except UnusableSlice as error:
        return ("unusable", str(error))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - compared, not hidden (Rust decoders panic with BaseException)
        return ("error", type(error).__name__)
    metadata = {key: ("nan" if isinstance(value, float) and math.isnan(value) else value) for key, value in ct.metadata.items()}
    return (ct.pixels.dtype.str, ct.pixels.tobytes(), ct.pixels.shape, ct.slope, ct.intercept, metadata)


def _compare(files: dict[str, bytes], monkeypatch) -> int:
    """Assert that read_ct_slice gives the same outcome with and without the fast path; returns how many
    files the fast path read."""
    fast = {name: _outcome(data) for name, data in files.items()}
    taken = sum(read_native_slice(data, MAX_SIDE) is not None for data in files.values())
    with monkeypatch.context() as patch:
        patch.setattr(ich.imaging.dicom, "read_native_slice", lambda data, max_side: None)
        slow = {name: _outcome(data) for name, data in files.items()}
    for name in files:
        assert fast[name] == slow[name], name
    return taken


def _implicit(data: bytes) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    dataset.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def _with(data: bytes, **elements) -> bytes:
    """``data`` with elements set (values written as given, valid or not) or removed (None)."""
    settings = pydicom.config.settings
    modes = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
        for keyword, value in elements.items():
            if value is None:
                delattr(dataset, keyword)
            elif isinstance(value, bytes):  # raw value bytes, as a damaged file has them
                tag = pydicom.datadict.tag_for_keyword(keyword)
                dataset[tag] = RawDataElement(Tag(tag), pydicom.datadict.dictionary_VR(tag), len(value), value, 0, False, True)
            else:
                setattr(dataset, keyword, value)
        buffer = io.BytesIO()
        dataset.save_as(buffer)
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = modes
    return buffer.getvalue()


def test_synthetic_rsna_slices_take_the_fast_path_with_pydicoms_values(tmp_path, monkeypatch):
    generate(SynthesizeParams(patients=3, slices_per_series=6, image_size=32, corrupt_files=3, missing_files=0), tmp_path)
    files = {path.name: path.read_bytes() for path in sorted((tmp_path / "stage_2_train").glob("*.dcm"))}
    files.update({f"implicit {name}": _implicit(data) for name, data in list(files.items())[:6] if data[128:132] == b"DICM"})
    taken = _compare(files, monkeypatch)
    usable = sum(_outcome(data)[0] not in ("unusable", "error") for data in files.values())
    assert usable >= 18 and taken == usable  # every usable synthetic slice, explicit or implicit VR


def test_value_spellings_and_edge_cases_agree_with_pydicom(monkeypatch):
    rng = np.random.default_rng(3)
    base = ct_dicom_bytes(rng.integers(0, 2000, size=(16, 12)), bits_stored=12, pixel_representation=0)
    signed = ct_dicom_bytes(rng.integers(-1000, 2000, size=(16, 16)))
    cases = {
        "base": base,
        "signed": signed,
        "wrapped for the RSNA fix": ct_dicom_bytes(rng.integers(0, 4096, size=(8, 8)), intercept=0.0, bits_stored=12, pixel_representation=0),
        # pydicom sign-extends bit 11 of signed 12-bit data: left to pydicom
        "signed 12-bit": ct_dicom_bytes(rng.integers(0, 4096, size=(8, 8)), bits_stored=12, pixel_representation=1),
        "slope as several values": _with(base, RescaleSlope="1.5\\2"),
        "intercept spelt with spaces": _with(base, RescaleIntercept=" -1024.0 "),
        "intercept in exponent form": _with(base, RescaleIntercept="-1.024E3"),
        "intercept absent": _with(base, RescaleIntercept=None),
        "slope zero": _with(base, RescaleSlope="0"),
        "intercept not a number": _with(base, RescaleIntercept=b"abc "),
        "intercept with an underscore": _with(base, RescaleIntercept=b"-1_024"),
        "position with two values": _with(base, ImagePositionPatient=[1, 2]),
        "position absent": _with(base, ImagePositionPatient=None),
        "one frame stated": _with(base, NumberOfFrames="1"),
        "zero frames stated": _with(base, NumberOfFrames="0"),
        "two frames stated": _with(base, NumberOfFrames="2"),
        "patient ID padded": _with(base, PatientID="ID_7 "),
        "patient ID non-ASCII": _with(base, PatientID="ID_Ä"),
        "patient ID with two values": _with(base, PatientID="a\\b"),
        "patient ID absent": _with(base, PatientID=None),
        "modality MR": _with(base, Modality="MR"),
        "modality absent": _with(base, Modality=None),
        "colour": _with(base, SamplesPerPixel=3),
        "rows too many": _with(base, Rows=MAX_SIDE + 1),
        "bits allocated 8": _with(base, BitsAllocated=8),
        "blank": ct_dicom_bytes(np.full((8, 8), 1024)),
        "truncated pixels": base[:-10],
        "trailing element": base + b"\xfc\xff\xfc\xff" + b"OB\0\0" + (2).to_bytes(4, "little") + b"\0\0",
        "no preamble": base[132:],
    }
    cases.update({f"implicit {name}": _implicit(data) for name, data in list(cases.items()) if data[128:132] == b"DICM" and name != "trailing element"})
    taken = _compare(cases, monkeypatch)
    assert read_native_slice(base, MAX_SIDE) is not None and read_native_slice(_implicit(signed), MAX_SIDE) is not None
    assert 10 <= taken < len(cases)


def test_damaged_files_agree_with_pydicom(monkeypatch):
    files = {f"{name} ({how})": data for name, how, data in damaged_variants(400, seed=11)}
    assert _compare(files, monkeypatch) > 0


def test_real_files_agree_with_pydicom(monkeypatch):
    names = [Path(name) for name in get_testdata_files() if Path(name).is_file() and Path(name).stat().st_size < 2_000_000]
    files = {path.name: path.read_bytes() for path in names}
    files["CT_small.dcm"] = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    _compare(files, monkeypatch)


@pytest.mark.parametrize("implicit", [False, True])
def test_every_prefix_of_a_file_is_left_to_pydicom_without_error(implicit):
    data = ct_dicom_bytes(np.arange(64).reshape(8, 8))
    data = _implicit(data) if implicit else data
    assert read_native_slice(data, MAX_SIDE) is not None
    for cut in range(len(data)):  # every element boundary and every byte inside a header
        assert read_native_slice(data[:cut], MAX_SIDE) is None
