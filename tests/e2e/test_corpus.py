"""pydicom's corpus of real-world DICOM files (pydicom + pydicom-data) through preprocess: every file becomes a
PNG or a quarantine row with a specific reason, compressed CT decodes like the uncompressed original, and no
identifying header value reaches an output."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from ich.data.preprocess import process_many
from ich.data.pseudonyms import PSEUDONYM_KEY_ENV
from ich.imaging.windows import compose_rgb
from tests.helpers import write_long_csv
from tests.project import ROOT, copy_repository, dvc, run

IMAGE_SIZE = 64
CORPUS = sorted(Path(name) for name in get_testdata_files() if Path(name).is_file())
# The CT slices of the corpus that a CT pipeline must turn into images (single frame, monochrome, pixels).
DECODABLE_CT = {
    "693_J2KR.dcm",
    "693_J2KI.dcm",
    "693_UNCI.dcm",
    "693_UNCR.dcm",  # a CQ500 head CT: JPEG 2000 / native
    "bad_sequence.dcm",  # JPEG Lossless (process 14)
    "explicit_VR-UN.dcm",
    "J2K_pixelrep_mismatch.dcm",  # JPEG 2000 lossless
    "CT_small.dcm",
    "17106",
    "17136",
    "17166",
    "17196",
    "6293",
    "6924",
    "2062",
    "2392",
    "2693",
    "3023",
    "3353",  # DICOMDIR trees
}
IDENTIFYING = (
    "PatientName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientMotherBirthName",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "AccessionNumber",
    "StationName",
)
PSEUDONYMIZED = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")


def corpus_id(path: Path) -> str:
    return "ID_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _process(dicom_dir: Path, png_dir: Path, ids: list[str], image_size: int = IMAGE_SIZE) -> dict:
    """Run preprocess's code over ``ids``: ``{ID: (FileResult, RGB array or None)}``."""
    results = process_many(ids, dicom_dir, png_dir, image_size, workers=1)
    outcome = {}
    for result in results:
        png = png_dir / f"{result.image_id}.png"
        outcome[result.image_id] = (result, cv2.imread(str(png))[..., ::-1] if png.exists() else None)
    return outcome


def _run_one(tmp_path: Path, data: bytes, image_size: int = IMAGE_SIZE):
    dicom_dir = tmp_path / "dicom"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    (dicom_dir / "ID_0a.dcm").write_bytes(data)
    return _process(dicom_dir, tmp_path / "png", ["ID_0a"], image_size)["ID_0a"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every corpus file laid out as ``<ID>.dcm`` and processed: ``{file name: [(result, rgb or None)]}``."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "dicom").mkdir()
    for path in CORPUS:
        (root / "dicom" / f"{corpus_id(path)}.dcm").write_bytes(path.read_bytes())
    processed = _process(root / "dicom", root / "png", [corpus_id(path) for path in CORPUS])
    outcome = {}
    for path in CORPUS:
        outcome.setdefault(path.name, []).append(processed[corpus_id(path)])
    return outcome


def test_the_whole_corpus_is_installed():
    # pydicom ships ~190 files; pydicom-data adds the compressed and odd ones (693_*, JPEG-LS, ...).
    assert len(CORPUS) > 240
    assert get_testdata_file("693_J2KR.dcm") is not None


def test_every_corpus_file_is_a_png_or_has_a_specific_reason(corpus):
    written = {name for name, results in corpus.items() for result, _ in results if result.reason is None}
    assert written == DECODABLE_CT
    reasons = [result.reason for results in corpus.values() for result, _ in results if result.reason]
    assert not [reason for reason in reasons if reason.startswith("unexpected")]
    assert sum(len(results) for results in corpus.values()) == len(CORPUS)

    def reason(name):
        return corpus[name][0][0].reason

    assert reason("MR_small.dcm") == "not a CT image (Modality=MR)"
    assert reason("US1_J2KR.dcm") == "not a CT image (Modality=US)"
    assert reason("rtplan.dcm") == "not a CT image (Modality=RTPLAN)"
    assert reason("SC_rgb_jpeg_app14_dcmd.dcm").startswith("not a CT image (no Modality; SOP Class is Secondary")
    assert reason("DICOMDIR").startswith("DICOMDIR")
    assert reason("eCT_Supplemental.dcm").startswith("multi-frame image (NumberOfFrames=2)")
    assert reason("README.txt").startswith("not a DICOM file")
    assert reason("IM000000") == "no pixel data"  # a CT object without pixels
    # A bare dataset without preamble/file meta is read (here an RT plan, so quarantined for that reason).
    assert reason("ExplVR_LitEndNoMeta.dcm") == "not a CT image (Modality=RTPLAN)"


def test_compressed_ct_decodes_like_the_uncompressed_original(corpus):
    # 693_UNCR is the source of the lossless 693_J2KR; 693_UNCI is the decompressed lossy 693_J2KI.
    assert np.array_equal(corpus["693_J2KR.dcm"][0][1], corpus["693_UNCR.dcm"][0][1])
    lossy, reference = corpus["693_J2KI.dcm"][0][1].astype(int), corpus["693_UNCI.dcm"][0][1].astype(int)
    assert np.abs(lossy - reference).mean() <= 1.0
    assert corpus["693_UNCR.dcm"][0][1].max() > 0


def test_ct_png_has_the_three_windows(corpus):
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hounsfield = apply_modality_lut(dataset.pixel_array, dataset)  # pydicom's own modality LUT
    reference = compose_rgb(hounsfield).astype(np.float64).reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    rgb = corpus["CT_small.dcm"][0][1]
    assert rgb.shape == (64, 64, 3)
    assert np.abs(rgb - reference).max() <= 1.0


def _ct_small() -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _bytes(dataset: pydicom.Dataset, **kwargs) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, **kwargs)
    return buffer.getvalue()


def _rle(dataset):
    dataset.compress(RLELossless)
    return _bytes(dataset)


def _jpeg2000(dataset):
    dataset.compress(JPEG2000Lossless)
    return _bytes(dataset)


def _implicit(dataset):
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return _bytes(dataset, implicit_vr=True, little_endian=True)


def _big_endian(dataset):
    dataset.PixelData = dataset.pixel_array.astype(">i2").tobytes()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, implicit_vr=False, little_endian=False)
    return buffer.getvalue()


def _no_file_meta(dataset):
    del dataset.file_meta
    dataset.preamble = None
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


@pytest.mark.parametrize("variant", [_rle, _jpeg2000, _implicit, _big_endian, _no_file_meta])
def test_ct_in_other_encodings_gives_the_same_png(tmp_path, variant):
    original, original_rgb = _run_one(tmp_path / "a", _bytes(_ct_small()))
    result, rgb = _run_one(tmp_path / "b", variant(_ct_small()))
    assert original.reason is None and result.reason is None, result.reason
    assert np.array_equal(rgb, original_rgb)


def _truncated(dataset):
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    return _bytes(dataset)


def _truncated_jpeg2000(dataset):
    dataset.compress(JPEG2000Lossless)
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    dataset.PixelData = encapsulate([frame[: len(frame) // 2]])
    return _bytes(dataset)


def _colour(dataset):
    rgb = np.repeat(dataset.pixel_array[..., None], 3, axis=-1).astype(np.uint8)
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = rgb.tobytes()
    return _bytes(dataset)


def _no_pixels(dataset):
    del dataset.PixelData
    return _bytes(dataset)


def _blank(dataset):
    dataset.PixelData = np.zeros_like(dataset.pixel_array).tobytes()
    return _bytes(dataset)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (_truncated, "pixel data truncated"),
        (_truncated_jpeg2000, "pixel data could not be decoded (JPEG 2000 Image Compression (Lossless Only))"),
        (_colour, "colour image (SamplesPerPixel=3, RGB)"),
        (_no_pixels, "no pixel data"),
        (_blank, "blank image"),
        (lambda dataset: b"\x00" * 200, "not a DICOM file"),
        (lambda dataset: b"", "not a DICOM file"),
    ],
)
def test_broken_ct_is_quarantined_with_its_reason(tmp_path, variant, expected):
    result, rgb = _run_one(tmp_path, variant(_ct_small()))
    assert rgb is None and result.metadata is None
    assert result.reason.startswith(expected), result.reason


def _header_values(paths, keywords) -> set[str]:
    """Every value (len >= 6) of the given keywords anywhere in the files' headers, sequences included."""
    values: set[str] = set()
    for path in paths:
        try:
            dataset = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        except Exception:
            continue

        def collect(ds):
            for element in ds.iterall():
                if element.keyword in keywords and element.value not in (None, ""):
                    items = element.value if element.VM > 1 else [element.value]
                    values.update(str(item) for item in items if len(str(item)) >= 6)

        try:
            collect(dataset)
        except Exception:  # a damaged sequence: keep what was read
            continue
    return values


def test_corpus_through_dvc_repro_preprocess_leaks_no_identifying_value(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ids = {}
    for path in CORPUS:
        ids[corpus_id(path)] = path
        (raw / f"{corpus_id(path)}.dcm").write_bytes(path.read_bytes())
    write_long_csv(tmp_path / "labels.csv", {image_id: {} for image_id in ids})
    project = copy_repository(
        tmp_path / "repo",
        {
            "data": {"labels_csv": str(tmp_path / "labels.csv"), "dicom_dir": str(raw)},
            "index": {"pseudonymize_ids": True},
            "sample": {"per_label": 10_000},
            "preprocess": {"image_size": 32, "max_quarantine_fraction": 1.0},
        },
    )
    key = "corpus-test-key-0123456789"
    result = dvc("repro", "preprocess", cwd=project, env={PSEUDONYM_KEY_ENV: key})
    log = result.stdout + result.stderr

    metadata = pd.concat(
        [pd.read_csv(project / f"data/split/{name}.csv", dtype=str, keep_default_na=False) for name in ("train", "val", "test")]
    )
    quarantine = pd.read_csv(project / "data/quarantine.csv", dtype=str, keep_default_na=False)
    assert sorted(metadata["ID"].tolist() + quarantine["ID"].tolist()) == sorted(ids)
    assert {ids[image_id].name for image_id in metadata["ID"]} == DECODABLE_CT
    assert all(quarantine["reason"].str.len() > 0)
    assert sorted(path.stem for path in (project / "data/png").glob("*.png")) == sorted(metadata["ID"])
    summary = json.loads((project / "metrics/preprocess.json").read_text())
    unreadable = json.loads((project / "metrics/index.json").read_text())["unreadable"]
    assert summary["png_written"] == len(DECODABLE_CT) and summary["quarantined"] + unreadable == len(CORPUS) - len(DECODABLE_CT)
    # Same patient, same pseudonym; the 11 slices of the DICOMDIR trees come from two patients.
    assert metadata["PatientID"].str.fullmatch(r"P[0-9a-f]{24}").all()
    tiny = metadata[[ids[image_id].name.isdigit() for image_id in metadata["ID"]]]
    assert tiny["PatientID"].nunique() == 2

    secrets = _header_values(CORPUS, set(IDENTIFYING) | set(PSEUDONYMIZED))
    assert len(secrets) > 50  # names, dates, institutions, IDs and UIDs of the corpus
    # Everything the stages wrote except the copied DICOMs themselves.
    outputs = [project / "dvc.lock", *(project / "metrics").rglob("*"), *(project / "data").rglob("*")]
    outputs = [path for path in outputs if path.is_file() and "dicom" not in path.relative_to(project).parts[:2]]
    # Files the copy brought along from the repository and this run did not rewrite (the demo's evaluate.json) hold
    # nothing of the corpus; their digits could only match a numeric header value by chance.
    outputs = [path for path in outputs if not _same_as_committed(path, project)]
    assert len(outputs) > len(DECODABLE_CT)
    texts = {str(path.relative_to(project)): path.read_bytes().decode("latin-1") for path in outputs}
    texts["<dvc repro log>"] = log
    leaks = {(name, value) for name, text in texts.items() for value in secrets if value in text}
    assert not leaks, sorted(leaks)[:10]


def _same_as_committed(path, project) -> bool:
    committed = ROOT / path.relative_to(project)
    return committed.is_file() and committed.read_bytes() == path.read_bytes()


def test_pseudonymize_without_a_key_stops_with_a_clear_error(tmp_path):
    project = copy_repository(tmp_path, {"index": {"pseudonymize_ids": True}})
    result = run([sys.executable, "-m", "stages.index"], cwd=project, check=False, unset=[PSEUDONYM_KEY_ENV])
    assert result.returncode == 1
    assert PSEUDONYM_KEY_ENV in result.stderr and "Traceback" not in result.stderr
