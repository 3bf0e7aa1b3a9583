import io
import math

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

import ich.data.index
import ich.imaging.header
import ich.imaging.native
from ich.data.index import HeaderResult, index_headers, read_header
from ich.data.tables import INDEX_COLUMNS

MISSING = "file missing: no <ID>.dcm in data.dicom_dir"
NOT_DICOM = "not a DICOM file (no 'DICM' prefix and no DICOM header found)"
INVALID_ID = "invalid image ID (expected ID_<hex>)"


def _dicom(
    *,
    patient_id="P-1",
    study="1.2.840.1",
    series="1.2.840.1.7",
    position=(0.0, 0.0, 0.0),
    shape=(4, 6),
    syntax=ExplicitVRLittleEndian,
    comment=None,
    file_format=True,
) -> bytes:
    """A CT DICOM with the given header values; ``position=None`` leaves ImagePositionPatient out."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    if position is not None:
        ds.ImagePositionPatient = list(position)
    if comment is not None:
        ds.ImageComments = comment  # (0020,4000): before the image elements, so it lengthens the header
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.zeros(shape, dtype="<i2").tobytes()
    buffer = io.BytesIO()
    if file_format:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    else:  # a bare dataset: no preamble, no 'DICM', no file meta (implicit VR little endian)
        del ds.file_meta
        pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def _row(image_id, patient, study, series, position_z, rows, columns):
    return dict(zip(INDEX_COLUMNS, (image_id, patient, study, series, position_z, rows, columns)))


def test_rows_hold_the_header_values(tmp_path):
    # Three ways the header meets the reader: a file longer than the first read (4 KB) whose header fits
    # in it, a file shorter than that, and a header longer than that (a 6000-character comment).
    (tmp_path / "ID_0a.dcm").write_bytes(
        _dicom(patient_id="PAT-7", study="1.2.3", series="1.2.3.9", position=(-125.0, -125.5, 37.25), shape=(64, 48))
    )
    (tmp_path / "ID_0b.dcm").write_bytes(
        _dicom(
            patient_id="PAT-8",
            study="1.2.4",
            series="1.2.4.1",
            position=(0, 0, -12.5),
            shape=(3, 5),
            syntax=ImplicitVRLittleEndian,
        )
    )
    (tmp_path / "ID_0c.dcm").write_bytes(
        _dicom(patient_id="PAT-9", study="1.2.5", series="1.2.5.3", position=(1, 2, 3), shape=(2, 2), comment="x" * 6000)
    )
    (tmp_path / "ID_0d.dcm").write_bytes(
        _dicom(patient_id="PAT-10", study="1.2.6", series="1.2.6.4", position=(0, 0, 8.0), shape=(2, 3), file_format=False)
    )
    assert (tmp_path / "ID_0a.dcm").stat().st_size > 4096 > (tmp_path / "ID_0b.dcm").stat().st_size

    mode = pydicom.config.settings.reading_validation_mode
    results = list(index_headers(["ID_0a", "ID_0b", "ID_0c", "ID_0d"], tmp_path, workers=1))
    assert pydicom.config.settings.reading_validation_mode == mode  # pydicom's setting is given back

    assert [result.reason for result in results] == [None, None, None, None]
    assert [result.row for result in results] == [
        _row("ID_0a", "PAT-7", "1.2.3", "1.2.3.9", 37.25, 64, 48),
        _row("ID_0b", "PAT-8", "1.2.4", "1.2.4.1", -12.5, 3, 5),
        _row("ID_0c", "PAT-9", "1.2.5", "1.2.5.3", 3.0, 2, 2),
        _row("ID_0d", "PAT-10", "1.2.6", "1.2.6.4", 8.0, 2, 3),
    ]
    assert list(results[0].row) == list(INDEX_COLUMNS)


@pytest.mark.parametrize(
    "position_text",
    [None, b"111.0\\222.0000000 ", b"111.0\\222.0\\abcdef", b"111.0\\222.0\\inf   "],
    ids=["absent", "two values", "not a number", "infinite"],
)
def test_position_z_is_nan_when_absent_or_malformed(tmp_path, position_text):
    if position_text is None:
        data = _dicom(position=None)
    else:  # the same element length, other text: pydicom would not write a malformed DS itself
        data = _dicom(position=(111.0, 222.0, 333.0))
        assert data.count(b"111.0\\222.0\\333.0 ") == 1 and len(position_text) == 18
        data = data.replace(b"111.0\\222.0\\333.0 ", position_text)
    (tmp_path / "ID_1.dcm").write_bytes(data)
    result = read_header("ID_1", tmp_path)
    assert result.reason is None
    assert math.isnan(result.row["position_z"])
    assert result.row["rows"] == 4 and result.row["columns"] == 6


def test_every_unusable_file_gets_its_reason_in_input_order(tmp_path):
    good = _dicom(patient_id="PAT-1", position=(0, 0, 5.0))
    (tmp_path / "ID_a1.dcm").write_bytes(good)
    (tmp_path / "ID_a2.dcm").write_bytes(b"ID,Label\nID_a2_any,0\n" * 300)  # not DICOM
    pixel_data_at = good.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData, little endian
    (tmp_path / "ID_a3.dcm").write_bytes(good[: pixel_data_at - 10])  # cut inside the header
    (tmp_path / "ID_a5.dcm").write_bytes(_dicom(shape=(0, 0)))
    ids = ["ID_a1", "ID_a2", "ID_a3", "ID_a4", "ID_a5", "ID_../a1", "/etc/passwd", "ID_a1"]

    results = list(index_headers(ids, tmp_path, workers=1))

    assert [result.image_id for result in results] == ids
    assert [result.reason for result in results] == [
        None,
        NOT_DICOM,
        f"no pixel data: the file ends after {pixel_data_at - 10} bytes, before any (truncated?)",
        MISSING,
        "no image size (Rows/Columns missing or zero)",
        INVALID_ID,
        INVALID_ID,
        None,
    ]
    assert results[0].row == _row("ID_a1", "PAT-1", "1.2.840.1", "1.2.840.1.7", 5.0, 4, 6)
    assert all(result.row is None for result in results[1:-1])


def test_a_parser_exception_is_a_reason_but_an_interrupt_is_not(tmp_path, monkeypatch):
    (tmp_path / "ID_b1.dcm").write_bytes(_dicom())

    def broken(*args, **kwargs):
        raise RuntimeError("bad element\n at 0x88")

    monkeypatch.setattr(ich.imaging.header.pydicom, "dcmread", broken)
    monkeypatch.setattr(ich.imaging.native, "data_element_generator", broken)  # the common path's parser too
    assert read_header("ID_b1", tmp_path) == HeaderResult("ID_b1", None, "unreadable DICOM header: bad element at 0x88")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ich.imaging.header.pydicom, "dcmread", interrupted)
    monkeypatch.setattr(ich.imaging.native, "data_element_generator", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_header("ID_b1", tmp_path)


def test_same_results_in_order_with_one_and_two_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(ich.data.index, "_CHUNK_SIZE", 3)  # many small chunks in flight, returned out of turn
    ids = []
    for index in range(40):
        image_id = f"ID_{index:04x}"
        ids.append(image_id)
        if index % 7 == 3:
            continue  # missing
        data = _dicom(patient_id=f"PAT-{index % 5}", position=(0, 0, float(index)), shape=(2 + index % 3, 4))
        (tmp_path / f"{image_id}.dcm").write_bytes(data if index % 11 != 5 else data[:200])
    ids.insert(17, "ID_zz")

    one = list(index_headers(ids, tmp_path, workers=1))
    two = list(index_headers(iter(ids), tmp_path, workers=2))

    assert one == two
    assert [result.image_id for result in two] == ids
    assert two[0].row == _row("ID_0000", "PAT-0", "1.2.840.1", "1.2.840.1.7", 0.0, 2, 4)
    assert two[3].reason == MISSING and two[17].reason == INVALID_ID
    assert two[5].reason.startswith("no pixel data")  # ID_0005, cut at 200 bytes
    assert sum(result.row is not None for result in two) == 40 - 6 - 3  # 6 missing, 3 cut


def test_ids_are_read_as_the_scan_goes(tmp_path, monkeypatch):
    monkeypatch.setattr(ich.data.index, "_CHUNK_SIZE", 4)
    taken = []

    def ids():
        for index in range(1000):
            taken.append(index)
            yield f"ID_{index:x}"

    results = index_headers(ids(), tmp_path, workers=2)
    first = next(results)
    assert first.reason == MISSING
    assert len(taken) <= 2 * 2 * 4 + 1  # two chunks per worker in flight, not the whole input
    results.close()


def test_negative_workers_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="`workers` must be 0"):
        index_headers(["ID_1"], tmp_path, workers=-1)


def _labels(*ids):
    import pandas as pd

    from ich.core.labels import LABELS

    return pd.DataFrame(
        [
            {"ID": image_id, **{label: int(label in ("any", "subdural") and n == 0) for label in LABELS}}
            for n, image_id in enumerate(ids)
        ]
    )


def test_build_index_joins_labels_and_headers_and_quarantines_the_rest(tmp_path):
    import pandas as pd

    from ich.core.labels import LABELS
    from ich.data.index import build_index
    from ich.data.tables import TABLE_COLUMNS, read_index

    header = {
        "ID": "ID_0a",
        "PatientID": "007",
        "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3",
        "position_z": -12.5,
        "rows": 512,
        "columns": 512,
    }
    results = [HeaderResult("ID_0a", header, None), HeaderResult("ID_0b", None, "file missing: no <ID>.dcm in data.dicom_dir")]
    rejects = pd.DataFrame({"ID": ["ID_../x"], "reason": ["image ID does not match ID_<hex>"]})
    outcome = build_index(_labels("ID_0a", "ID_0b"), rejects, results)
    assert list(outcome.index.columns) == list(TABLE_COLUMNS)
    assert outcome.index.to_dict("records") == [{**header, **{label: int(label in ("any", "subdural")) for label in LABELS}}]
    assert outcome.quarantine.values.tolist() == [
        ["ID_../x", "labels: image ID does not match ID_<hex>"],
        ["ID_0b", "file missing: no <ID>.dcm in data.dicom_dir"],
    ]
    assert (outcome.metrics["images_indexed"], outcome.metrics["unreadable"], outcome.metrics["label_problems"]) == (1, 1, 1)
    # written and read back: identifiers stay text ("007" is no number), position_z a float
    outcome.index.to_csv(tmp_path / "index.csv", index=False)
    again = read_index(tmp_path / "index.csv")
    assert again.loc[0, "PatientID"] == "007" and again.loc[0, "position_z"] == -12.5


def test_build_index_pseudonymizes_patient_and_uids_with_the_key():
    import hashlib

    from ich.data.index import build_index

    key = b"k" * 32
    header = {
        "ID": "ID_0a",
        "PatientID": "ID_p1",
        "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3",
        "position_z": 0.0,
        "rows": 8,
        "columns": 8,
    }
    import pandas as pd

    outcome = build_index(_labels("ID_0a"), pd.DataFrame(columns=["ID", "reason"]), [HeaderResult("ID_0a", header, None)], key)
    row = outcome.index.iloc[0]
    # HMAC-SHA256 written out (RFC 2104) with hashlib: H((K ^ opad) || H((K ^ ipad) || message)).
    block = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in block) + b"ID_p1").digest()
    assert row["PatientID"] == "P" + hashlib.sha256(bytes(b ^ 0x5C for b in block) + inner).hexdigest()[:24]
    assert row["StudyInstanceUID"].startswith("P") and row["SeriesInstanceUID"] != "1.2.3"
