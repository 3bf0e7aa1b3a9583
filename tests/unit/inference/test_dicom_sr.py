"""``ich predict --dicom-sr``: one DICOM SR per series, read back with pydicom and highdicom, against values
written out by hand. The model is a stand-in that gives each slice a probability from a table (by series and z), so
scores, decisions and key slices are known before the run; the rest of ``ich predict`` (scan, rendering, tables,
report) is the real code."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, CTImageStorage

from ich.core.files import write_json
from ich.core.labels import LABELS
from ich.core.params import SynthesizeParams
from ich.data.synth import generate
from ich.imaging.windows import DEFAULT_WINDOWS
from ich.inference import cli
from ich.inference.dicom_sr import LOCAL_SCHEME, ModelIdentity, sr_file_name, write_series_reports
from ich.inference.loading import SlicePredictions
from ich.models.card import ModelCard, model_card
from tests.helpers import ct_dicom_bytes

ROOT = "1.2.826.0.1.3680043.8.498.77"
STUDY_1, STUDY_2 = f"{ROOT}.1", f"{ROOT}.2"
SERIES_A, SERIES_B, SERIES_C = f"{ROOT}.1.1", f"{ROOT}.2.1", f"{ROOT}.2.2"  # the order of series.csv
THRESHOLDS = {
    "any": 0.45,
    "epidural": 0.5,
    "intraparenchymal": 0.55,
    "intraventricular": 0.4,
    "subarachnoid": 0.6,
    "subdural": 0.52,
}
# (series, z) -> probabilities in LABELS order (any, epidural, intraparenchymal, intraventricular, subarachnoid,
# subdural)
PROBABILITIES = {
    (SERIES_A, 0.0): [0.20, 0.10, 0.05, 0.01, 0.30, 0.15],
    (SERIES_A, 5.0): [0.90, 0.10, 0.60, 0.02, 0.30, 0.10],
    (SERIES_A, 10.0): [0.70, 0.40, 0.60, 0.03, 0.10, 0.05],
    (SERIES_A, 15.0): [0.90, 0.20, 0.20, 0.04, 0.20, 0.55],
    (SERIES_B, -10.0): [0.10, 0.01, 0.02, 0.03, 0.04, 0.05],
    (SERIES_B, -5.0): [0.30, 0.01, 0.02, 0.03, 0.04, 0.05],
    (SERIES_B, 0.0): [0.30, 0.02, 0.01, 0.03, 0.04, 0.06],
    (SERIES_C, 0.0): [0.5] * 6,
    (SERIES_C, 3.0): [0.5] * 6,
}
# By hand, with --key-slices 2: per label the series score, whether a slice reaches the threshold, and the z of the
# two key slices (highest probability first; ties to the lower z).
EXPECTED = {
    SERIES_A: {
        "any": (0.90, True, [5.0, 15.0]),
        "epidural": (0.40, False, [10.0, 15.0]),
        "intraparenchymal": (0.60, True, [5.0, 10.0]),
        "intraventricular": (0.04, False, [15.0, 10.0]),
        "subarachnoid": (0.30, False, [0.0, 5.0]),
        "subdural": (0.55, True, [15.0, 0.0]),
    },
    SERIES_B: {
        "any": (0.30, False, [-5.0, 0.0]),
        "epidural": (0.02, False, [0.0, -10.0]),
        "intraparenchymal": (0.02, False, [-10.0, -5.0]),
        "intraventricular": (0.03, False, [-10.0, -5.0]),
        "subarachnoid": (0.04, False, [-10.0, -5.0]),
        "subdural": (0.06, False, [0.0, -10.0]),
    },
}


def _sop(series: str, z: float) -> str:
    return f"{series}.{int(z) + 100}"  # z -10 -> .90, 15 -> .115: a valid UID component


def _slice(study: str, series: str, z: float, *, patient: bool = True, sop_class: bool = True) -> bytes:
    dataset = pydicom.dcmread(io.BytesIO(ct_dicom_bytes(1024 + np.arange(256).reshape(16, 16), position_z=z)))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = _sop(series, z)
    if patient:
        dataset.PatientID, dataset.PatientName, dataset.PatientBirthDate, dataset.PatientSex = "P1", "Doe^Jane", "19700101", "F"
        dataset.StudyDate, dataset.StudyTime, dataset.AccessionNumber, dataset.StudyID = "20260102", "101500", "ACC1", "7"
    else:
        del dataset.PatientID, dataset.PatientName
    if not sop_class:
        del dataset.SOPClassUID
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_sources(folder: Path) -> None:
    """Series A under RSNA-style names that are not its SOP Instance UIDs; series B, whose files lack every patient
    attribute, and series C, one of whose files has no SOP Class UID, under plain names."""
    (folder / "b").mkdir(parents=True)
    for index, z in enumerate([0.0, 5.0, 10.0, 15.0]):
        (folder / f"ID_a{index}.dcm").write_bytes(_slice(STUDY_1, SERIES_A, z))
    for index, z in enumerate([-10.0, -5.0, 0.0]):
        (folder / "b" / f"IM{index}").write_bytes(_slice(STUDY_2, SERIES_B, z, patient=False))
    (folder / "c0").write_bytes(_slice(STUDY_2, SERIES_C, 0.0))
    (folder / "c1").write_bytes(_slice(STUDY_2, SERIES_C, 3.0, sop_class=False))


class _TableModel:
    """Stands in for a loaded model: each slice's probabilities come from :data:`PROBABILITIES` (0.5 for a slice
    it does not list)."""

    sequence = None
    ood = None  # no out-of-distribution statistics

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @property
    def image_size(self) -> int:
        return self.card.image_size

    def predict_slices(self, images, series, positions, ids, batch_size=64, tta=False) -> SlicePredictions:
        assert len(images) == len(series)
        rows = [PROBABILITIES.get((str(uid), float(z)), [0.5] * len(LABELS)) for uid, z in zip(series, positions)]
        final = np.array(rows, dtype=np.float64)
        return SlicePredictions(cnn=final, final=final)


CARD = model_card(
    arch="convnext",
    described={},
    networks={"cnn": "cnn.keras"},
    image_size=32,
    windows=[{"name": window.name, "center": window.center, "width": window.width} for window in DEFAULT_WINDOWS],
    weights=None,
    thresholds=THRESHOLDS,
    git_revision="0123abcd",
    data_hash="md5:feedbeef",
)


def _predict(dicoms: Path, out: Path, *options: str) -> dict:
    models = out.parent / "models"
    write_json(CARD.to_json(), models / "model.json")
    args = cli.build_parser().parse_args(
        [str(dicoms), "--models", str(models), "--out", str(out), "--no-progress", "--workers", "1", "--no-explain", *options]
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_model_folder", lambda folder: _TableModel(CARD))
        return cli.run_predict(args)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("dicom-sr")
    _write_sources(root / "dicoms")
    summary = _predict(root / "dicoms", root / "out", "--key-slices", "2", "--dicom-sr")
    return {"summary": summary, "out": root / "out", "dicoms": root / "dicoms"}


def _items(dataset: Dataset) -> Iterator[Dataset]:
    """Every content item of an SR, depth first."""
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _text(dataset: Dataset, code_value: str) -> list[str]:
    return [str(item.TextValue) for item in _items(dataset) if item.ConceptNameCodeSequence[0].CodeValue == code_value]


def _report(run: dict, series_uid: str) -> Path:
    (entry,) = [entry for entry in run["summary"]["sr_files"] if entry["SeriesInstanceUID"] == series_uid]
    return run["out"] / entry["file"]


# --------------------------------------------------------------------------------------------- the files
def test_one_report_per_series_named_by_a_counter_and_a_failure_with_its_reason(run):
    summary, out = run["summary"], run["out"]
    assert summary["dicom_sr"] is True and summary["key_slices"] == 2
    assert [(entry["file"], entry["SeriesInstanceUID"]) for entry in summary["sr_files"]] == [
        ("sr/series_0001.dcm", SERIES_A),
        ("sr/series_0002.dcm", SERIES_B),
    ]
    assert [entry["SeriesInstanceUID"] for entry in summary["sr_failures"]] == [SERIES_C]
    assert "c1 has no SOPClassUID" in summary["sr_failures"][0]["reason"]
    assert sorted(path.name for path in (out / "sr").iterdir()) == ["series_0001.dcm", "series_0002.dcm"]
    assert json.loads((out / "summary.json").read_text())["sr_files"] == summary["sr_files"]
    assert pd.read_csv(out / "series.csv", dtype=str)["SeriesInstanceUID"].tolist() == [SERIES_A, SERIES_B, SERIES_C]
    with pytest.raises(ValueError, match="number must be 1 or more"):
        sr_file_name(0)


@pytest.mark.parametrize("series_uid", [SERIES_A, SERIES_B])
def test_the_report_references_its_study_series_and_every_source_image(run, series_uid):
    path = _report(run, series_uid)
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == Comprehensive3DSRStorage and dataset.Modality == "SR"
    assert (
        dataset.SOPInstanceUID == next(e for e in run["summary"]["sr_files"] if e["file"].endswith(path.name))["SOPInstanceUID"]
    )
    study = STUDY_1 if series_uid == SERIES_A else STUDY_2
    assert dataset.StudyInstanceUID == study and dataset.SeriesInstanceUID not in (SERIES_A, SERIES_B)
    (evidence,) = dataset.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == study
    (referenced_series,) = evidence.ReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == series_uid
    z_values = [z for uid, z in PROBABILITIES if uid == series_uid]
    assert sorted(item.ReferencedSOPInstanceUID for item in referenced_series.ReferencedSOPSequence) == sorted(
        _sop(series_uid, z) for z in z_values
    )
    assert {item.ReferencedSOPClassUID for item in referenced_series.ReferencedSOPSequence} == {CTImageStorage}
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sorted(sr.get_evidence()) == sorted((study, series_uid, _sop(series_uid, z), CTImageStorage) for z in z_values)


def test_patient_and_study_attributes_are_copied_and_missing_ones_left_empty(run):
    with_patient = pydicom.dcmread(_report(run, SERIES_A))
    assert (str(with_patient.PatientName), with_patient.PatientID, with_patient.PatientSex) == ("Doe^Jane", "P1", "F")
    assert (with_patient.PatientBirthDate, with_patient.StudyDate, with_patient.AccessionNumber) == (
        "19700101",
        "20260102",
        "ACC1",
    )
    without = pydicom.dcmread(_report(run, SERIES_B))  # the sources had no patient attribute at all
    assert (str(without.PatientName), without.PatientID, without.PatientSex, without.StudyDate) == ("", "", "", "")


# ------------------------------------------------------------------------------------------- the content
@pytest.mark.parametrize("series_uid", [SERIES_A, SERIES_B])
def test_probabilities_decisions_and_key_slices_are_those_written_by_hand_and_in_the_tables(run, series_uid):
    out = run["out"]
    series = pd.read_csv(out / "series.csv", dtype={"SeriesInstanceUID": str}).set_index("SeriesInstanceUID").loc[series_uid]
    slices = pd.read_csv(out / "slices.csv", dtype={"SeriesInstanceUID": str, "ID": str})
    slices = slices[slices["SeriesInstanceUID"] == series_uid]
    sr = hd.sr.srread(_report(run, series_uid))
    groups = {group.tracking_identifier: group for group in sr.content.get_image_measurement_groups()}
    assert sorted(groups) == sorted(LABELS)
    for label in LABELS:
        score, present, key_z = EXPECTED[series_uid][label]
        group = groups[label]
        (measurement,) = group.get_measurements()
        assert measurement.name.value == "122157" and measurement.unit.value == "{probability}"
        assert measurement.value == pytest.approx(score, abs=1e-12)
        assert measurement.value == series[label] == slices[label].max()  # exactly the tables' float
        (evaluation,) = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == ("Present" if present else "Absent")
        assert present == (series[f"{label}_flagged"] > 0)
        key_uids = [source.referenced_sop_instance_uid for source in group.source_images]
        assert key_uids == [_sop(series_uid, z) for z in key_z]
        assert series[f"{label}_key_z"].split() == [str(z) for z in key_z]
        by_z = dict(zip(slices["position_z"], slices["ID"]))
        assert series[f"{label}_key_slices"].split() == [by_z[z] for z in key_z]
        expected_finding = ("1386000", "SCT") if label == "any" else (label, LOCAL_SCHEME)
        assert (group.finding_type.value, group.finding_type.scheme_designator) == expected_finding


def test_key_slice_ids_of_rsna_named_files_are_their_names_and_the_report_references_their_uids(run):
    series = pd.read_csv(run["out"] / "series.csv", dtype=str).set_index("SeriesInstanceUID")
    assert series.loc[SERIES_A, "any_key_slices"] == "ID_a1 ID_a3"  # z 5 and z 15, named by their files
    assert series.loc[SERIES_B, "any_key_slices"] == f"{_sop(SERIES_B, -5.0)} {_sop(SERIES_B, 0.0)}"  # named by UID


def test_the_model_is_identified(run):
    dataset = pydicom.dcmread(_report(run, SERIES_A))
    assert set(_text(dataset, "111001")) == {"convnext"}  # Algorithm Name, one per group
    assert set(_text(dataset, "111003")) == {version("ich")}  # Algorithm Version
    parameters = _text(dataset, "111002")
    assert "git_revision=0123abcd" in parameters and "data_hash=md5:feedbeef" in parameters
    assert f"threshold={THRESHOLDS['subdural']}" in parameters
    assert _text(dataset, "121015") == ["convnext"]  # Device Observer Model Name
    assert dataset.ManufacturerModelName == "convnext" and dataset.SoftwareVersions == version("ich")
    assert ModelIdentity.from_card(CARD).device_uid == ModelIdentity.from_card(CARD).device_uid
    assert not any(item.ConceptNameCodeSequence[0].CodeValue == "ood" for item in _items(dataset))  # no flag yet


def test_the_out_of_distribution_flag_is_reported_when_the_series_table_has_one():
    from ich.inference.dicom_sr import OOD_COLUMN, series_report

    source = Dataset()
    source.SOPClassUID, source.SOPInstanceUID = CTImageStorage, f"{ROOT}.9.1"
    source.StudyInstanceUID, source.SeriesInstanceUID = f"{ROOT}.9", f"{ROOT}.9.0"
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
    ):
        setattr(source, keyword, "")
    row = {OOD_COLUMN: True, **{label: 0.25 for label in LABELS}, **{f"{label}_flagged": 0 for label in LABELS}}
    report = series_report([source], ["ID_9"], row, THRESHOLDS, ModelIdentity.from_card(CARD))
    (flag,) = [item for item in _items(report) if item.ConceptNameCodeSequence[0].CodeValue == "ood"]
    assert flag.ConceptCodeSequence[0].CodeMeaning == "Present"


def test_malformed_patient_and_study_attributes_are_left_empty_not_a_failure(tmp_path):
    dataset = pydicom.dcmread(io.BytesIO(_slice(STUDY_1, SERIES_A, 0.0)))
    with pytest.warns(UserWarning, match="Invalid value for VR"):  # pydicom's own complaint: the point of the test
        dataset.PatientSex, dataset.PatientBirthDate, dataset.StudyDate, dataset.StudyTime = "X", "1970", "2026-13-45", "25:99"
    dataset.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    slices = pd.DataFrame({"ID": [_sop(SERIES_A, 0.0)], "SeriesInstanceUID": [SERIES_A], "file": ["odd.dcm"]})
    series = pd.DataFrame({"SeriesInstanceUID": [SERIES_A], **{label: [0.25] for label in LABELS}})
    for label in LABELS:
        series[f"{label}_flagged"] = 0
    written, failures = write_series_reports(tmp_path / "out", tmp_path, slices, series, THRESHOLDS, ModelIdentity("m", "1"))
    assert failures == [] and [entry["file"] for entry in written] == ["sr/series_0001.dcm"]
    report = pydicom.dcmread(tmp_path / "out" / "sr" / "series_0001.dcm")
    assert (report.PatientSex, report.PatientBirthDate, report.StudyDate, report.StudyTime) == ("", "", "", "")
    assert (str(report.PatientName), report.PatientID) == ("Doe^Jane", "P1")  # the well-formed ones are kept


# ----------------------------------------------------------------------------------- report and reruns
def test_the_report_page_lists_key_slices_linked_to_their_thumbnails(run):
    page = (run["out"] / "report.html").read_text(encoding="utf-8")
    section = page.split(f'data-series="{SERIES_A}">', 1)[1].split("</section>", 1)[0]
    table = section.split('<table class="key-slices">', 1)[1].split("</table>", 1)[0]
    any_row = table.split('<th scope="row">any</th>', 1)[1].split("</tr>", 1)[0]
    assert any_row.count('href="#slice-') == 2
    assert any_row.index('href="#slice-ID_a1"') < any_row.index('href="#slice-ID_a3"')
    assert "(p 0.900, z 5.0 mm)" in any_row and "<strong>" in any_row  # 0.9 reaches the threshold 0.45
    assert 'id="slice-ID_a1"' in section and 'id="slice-ID_a3"' in section  # the anchors exist


def test_a_run_without_dicom_sr_removes_the_reports_of_a_previous_run(run, tmp_path):
    out = tmp_path / "out"
    (out / "sr").mkdir(parents=True)
    (out / "sr" / "series_0001.dcm").write_bytes(b"stale")
    summary = _predict(run["dicoms"], out, "--key-slices", "0", "--report-series", "0")
    assert not (out / "sr").exists() and summary["dicom_sr"] is False and "sr_files" not in summary
    assert not [column for column in pd.read_csv(out / "series.csv").columns if "_key_" in column]


def test_rsna_style_sources_whose_uids_are_their_ids_get_reports_referencing_them_as_they_are(tmp_path):
    """Kaggle's files hold ``ID_...`` in their UID elements (not valid UIDs) and no patient name: each series still
    gets its report, referencing exactly those values."""
    config = SynthesizeParams(
        seed=5,
        patients=2,
        slices_per_series=3,
        image_size=32,
        second_study_fraction=0.0,
        hemorrhage_fraction=0.5,
        wrapped_fraction=0.0,
        nonsquare_fraction=0.0,
        multivalued_window_fraction=0.0,
        corrupt_files=0,
        missing_files=0,
        duplicate_rows=0,
        invalid_id_images=0,
    )
    generate(config, tmp_path / "synthetic")
    out = tmp_path / "out"
    summary = _predict(tmp_path / "synthetic" / "stage_2_train", out, "--dicom-sr", "--report-series", "0")
    assert summary["sr_failures"] == [] and len(summary["sr_files"]) == summary["series"] == 2
    slices = pd.read_csv(out / "slices.csv", dtype=str)
    for entry in summary["sr_files"]:
        dataset = pydicom.dcmread(out / entry["file"])
        (evidence,) = dataset.CurrentRequestedProcedureEvidenceSequence
        (referenced,) = evidence.ReferencedSeriesSequence
        ids = slices.loc[slices["SeriesInstanceUID"] == entry["SeriesInstanceUID"], "ID"]
        assert referenced.SeriesInstanceUID == entry["SeriesInstanceUID"] and str(referenced.SeriesInstanceUID).startswith("ID_")
        assert sorted(item.ReferencedSOPInstanceUID for item in referenced.ReferencedSOPSequence) == sorted(ids)
        assert hd.sr.srread(out / entry["file"]).content.get_image_measurement_groups()
