"""The common-path reader (ich.imaging.native) gives what pydicom's dcmread gives: for every file of pydicom's
test corpus and for hand-made edge cases, the header and the slice read with it equal those read with dcmread."""

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import ich.imaging.dicom
import ich.imaging.header
import ich.imaging.native
from ich.imaging.dicom import UnusableSlice, read_ct_slice
from ich.imaging.header import read_header
from ich.imaging.native import read_native
from tests.helpers import ct_dicom_bytes

CORPUS = sorted(Path(name) for name in get_testdata_files() if Path(name).is_file())


def _ct(**values) -> Dataset:
    """A 4x4 CT slice in explicit VR little endian, with ``values`` set (a keyword set to None is left out)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    defaults = {
        "SOPClassUID": CTImageStorage,
        "SOPInstanceUID": "1.2.3.4.5",
        "Modality": "CT",
        "PatientID": "P-1",
        "StudyInstanceUID": "1.2.840.1",
        "SeriesInstanceUID": "1.2.840.1.7",
        "ImagePositionPatient": [0.0, 0.0, -12.5],
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 4,
        "Columns": 4,
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1,
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
    }
    for keyword, value in {**defaults, **values}.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.PixelData = (np.arange(16, dtype="<i2") * 40).tobytes()
    return ds


def _bytes(ds: Dataset, implicit: bool = False) -> bytes:
    buffer = io.BytesIO()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return buffer.getvalue()


def _explicit_with_vr(ds: Dataset, tag: int, vr: str) -> bytes:
    """The file of ``ds`` with the VR of one (short) element rewritten in place."""
    data = bytearray(_bytes(ds))
    position = data.index(int(tag).to_bytes(4, "little")[2:] + int(tag).to_bytes(4, "little")[:2], 132)
    data[position + 4 : position + 6] = vr.encode()
    return bytes(data)


def _dataset_start(data: bytes) -> int:
    """Where the dataset begins: after the preamble, 'DICM' and the file meta group (its length is its first element)."""
    return 144 + int.from_bytes(data[140:144], "little")


def _mislabelled() -> bytes:
    """Explicit VR little endian in the file meta, implicit VR in the dataset (pydicom notices and reads it implicit)."""
    explicit, implicit = _bytes(_ct()), _bytes(_ct(), implicit=True)
    return explicit[: _dataset_start(explicit)] + implicit[_dataset_start(implicit) :]


EDGE_CASES = {
    "explicit": _bytes(_ct()),
    "implicit": _bytes(_ct(), implicit=True),
    "utf-8 patient id": _bytes(_ct(SpecificCharacterSet="ISO_IR 192", PatientID="Müller-Ø-1")),
    "latin-1 patient id": _bytes(_ct(SpecificCharacterSet="ISO_IR 100", PatientID="Müller")),
    "multi-valued patient id": _bytes(_ct(PatientID="A\\B")),
    "no position": _bytes(_ct(ImagePositionPatient=None)),
    "two-number position": _bytes(_ct(ImagePositionPatient=[1.0, 2.0])),
    "empty position": _bytes(_ct(ImagePositionPatient="")),
    "no modality": _bytes(_ct(Modality=None)),
    "MR": _bytes(_ct(Modality="MR")),
    "no slope": _bytes(_ct(RescaleSlope=None, RescaleIntercept=None)),
    "multi-valued intercept": _bytes(_ct(RescaleIntercept="-1024\\0")),
    "12-bit unsigned, wrapped": _bytes(_ct(BitsStored=12, HighBit=11, PixelRepresentation=0, RescaleIntercept=0)),
    "empty bits stored": _bytes(_ct(BitsStored="")),
    "8-bit": _bytes(_ct(BitsAllocated=8, BitsStored=8, HighBit=7)),
    "colour": _bytes(_ct(SamplesPerPixel=3)),
    "two frames": _bytes(_ct(NumberOfFrames=2)),
    "no rows": _bytes(_ct(Rows=None)),
    "long header": _bytes(_ct(ImageComments="x" * 6000)),
    "padded UIDs": _bytes(_ct(SeriesInstanceUID="1.2.3\x00")),
    "modality stored as UN": _explicit_with_vr(_ct(), 0x00080060, "UN"),
    "implicit data labelled explicit": _mislabelled(),
    "truncated pixels": _bytes(_ct())[:-10],
    "cut in the header": _bytes(_ct())[:300],
}


def _without_native(monkeypatch):
    monkeypatch.setattr(ich.imaging.header, "read_native", lambda *args, **kwargs: None)
    monkeypatch.setattr(ich.imaging.dicom, "read_native", lambda *args, **kwargs: None)


def _slice_outcome(data: bytes):
    try:
        ct = read_ct_slice(data, "ID_1")
    except UnusableSlice as error:
        return ("unusable", str(error))
    except Exception as error:  # the same exception type either way counts as the same outcome
        return ("raised", type(error).__name__)
    return ("slice", ct.pixels.dtype.str, ct.pixels.tolist(), ct.slope, ct.intercept, repr(ct.metadata))


def _outcomes(files: dict[str, bytes], tmp_path: Path) -> dict:
    outcomes = {}
    for name, data in files.items():
        path = tmp_path / f"{len(outcomes)}.dcm"
        path.write_bytes(data)
        outcomes[name] = (repr(read_header(path)), _slice_outcome(data))
    return outcomes


def _corpus_files() -> dict[str, bytes]:
    return {path.name + str(index): path.read_bytes() for index, path in enumerate(CORPUS)}


@pytest.mark.parametrize("files", [EDGE_CASES, None], ids=["edge cases", "pydicom corpus"])
def test_the_common_path_reads_what_dcmread_reads(files, tmp_path, monkeypatch):
    files = files if files is not None else _corpus_files()
    used = []
    real = ich.imaging.native.read_native

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        used.append(result is not None)
        return result

    monkeypatch.setattr(ich.imaging.header, "read_native", counting)
    monkeypatch.setattr(ich.imaging.dicom, "read_native", counting)
    (tmp_path / "native").mkdir()
    native = _outcomes(files, tmp_path / "native")
    assert sum(used) >= 10  # the common path did read files (and so the comparison compares something)
    with monkeypatch.context() as patch:
        _without_native(patch)
        (tmp_path / "dcmread").mkdir()
        expected = _outcomes(files, tmp_path / "dcmread")
    assert native == expected


def test_an_rsna_slice_takes_the_common_path():
    data = ct_dicom_bytes(np.arange(64).reshape(8, 8) + 900, patient_id="ID_7", position_z=-3.0)
    native = read_native(data, ("PatientID", "Rows", "ImagePositionPatient"), pixels=True)
    reference = pydicom.dcmread(io.BytesIO(data))
    assert native is not None
    assert native.values["PatientID"] == "ID_7" and native.values["Rows"] == 8
    assert [float(value) for value in native.values["ImagePositionPatient"]] == [0.0, 0.0, -3.0]
    assert native.pixel_data == reference.PixelData
    assert native.syntax == ExplicitVRLittleEndian and native.media_class == CTImageStorage


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * 200,  # no DICM prefix
        EDGE_CASES["modality stored as UN"],  # a VR other than the standard one
        EDGE_CASES["implicit data labelled explicit"],  # VRs encoded otherwise than the syntax says
    ],
    ids=["no prefix", "non-standard VR", "mislabelled VR encoding"],
)
def test_files_off_the_common_path_go_to_dcmread(data):
    assert read_native(data, ("Modality", "PatientID")) is None
