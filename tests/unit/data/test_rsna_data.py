"""benchmarks.rsna_data: the RSNA-size synthetic set (checked small, and its plan at full size)."""

import re
from collections import defaultdict

import numpy as np
import pydicom
import pytest

from benchmarks.rsna_data import PREVALENCE, plan_rsna_size_set, write_rsna_size_set
from ich.core.ids import is_valid_id
from ich.core.labels import ANY, RSNA_ROW_ORDER, SUBTYPES
from ich.core.quarantine import FILE_MISSING
from ich.data.labels_csv import parse_long_csv
from ich.imaging.dicom import read_ct_slice, to_hounsfield
from ich.imaging.header import Header, read_header
from ich.imaging.slices import RenderedSlice, render_file

SMALL = dict(images=600, series=20, patients=17, size=32, seed=0)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna-size")
    counts = write_rsna_size_set(root, workers=2, **SMALL)
    return root, counts


def _plain_read(path):
    """What the header says, read the plain pydicom way (independent of ich.imaging.header)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {
        "sop": str(ds.SOPInstanceUID),
        "meta_sop": str(ds.file_meta.MediaStorageSOPInstanceUID),
        "patient": str(ds.PatientID),
        "study": str(ds.StudyInstanceUID),
        "series": str(ds.SeriesInstanceUID),
        "position": [float(value) for value in ds.ImagePositionPatient],
        "instance_number": "InstanceNumber" in ds,
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
    }


def test_counts_files_and_csv(small_set):
    root, counts = small_set
    assert {key: counts[key] for key in ("images", "files", "series", "studies", "patients")} == {
        "images": 600,
        "files": 599,
        "series": 20,
        "studies": 20,
        "patients": 17,
    }
    assert counts["patients_two_series"] == 3 and counts["corrupt_files"] == counts["missing_files"] == 1
    files = sorted((root / "stage_2_train").glob("*.dcm"))
    assert len(files) == 599
    assert not (root / "stage_2_train" / f"{counts['missing_id']}.dcm").exists()
    assert (root / "stage_2_train" / f"{counts['corrupt_id']}.dcm").exists()
    assert counts["bytes"] == sum(path.stat().st_size for path in files) + (root / "stage_2_train.csv").stat().st_size

    lines = (root / "stage_2_train.csv").read_text().splitlines()
    assert lines[0] == "ID,Label" and len(lines) - 1 == 6 * 600 == counts["csv_rows"]
    rows = [line.split(",") for line in lines[1:]]
    assert {value for _, value in rows} <= {"0", "1"}
    images = []
    for start in range(0, len(rows), 6):
        names = [rows[start + offset][0].rsplit("_", 1) for offset in range(6)]
        assert [label for _, label in names] == list(RSNA_ROW_ORDER)
        assert len({image for image, _ in names}) == 1
        images.append(names[0][0])
    assert len(set(images)) == 600
    assert all(re.fullmatch(r"ID_[0-9a-f]{9}", image) and is_valid_id(image) for image in images)
    assert {path.stem for path in files} | {counts["missing_id"]} == set(images)

    parsed = parse_long_csv(str(root / "stage_2_train.csv"))  # the repository's own reader accepts it
    wide = parsed.wide
    assert len(wide) == 600 and parsed.counts["rows_malformed"] == 0
    assert (wide[ANY] == wide[list(SUBTYPES)].max(axis=1)).all()
    assert counts["positive_any"] == int(wide[ANY].sum()) > 0


def test_headers_match_plan_and_rsna_structure(small_set):
    root, counts = small_set
    plan = plan_rsna_size_set(SMALL["images"], SMALL["series"], SMALL["patients"], SMALL["seed"])
    intended = {}
    for series in range(SMALL["series"]):
        for index in range(int(plan.starts[series]), int(plan.starts[series + 1])):
            intended[plan.image_id(index)] = (
                plan.patient_id(series),
                plan.study_uid(series),
                plan.series_uid(series),
                plan.z(index),
            )
    labels = {line.split(",")[0]: int(line.split(",")[1]) for line in (root / "stage_2_train.csv").read_text().splitlines()[1:]}

    by_series = defaultdict(list)
    study_patient = {}
    for path in sorted((root / "stage_2_train").glob("*.dcm")):
        header = read_header(path)
        assert isinstance(header, Header) and header.has_pixels, (path.name, header)
        plain = _plain_read(path)
        assert plain["sop"] == plain["meta_sop"] == header.sop_instance_uid == path.stem
        assert (header.patient_id, header.study_uid, header.series_uid, header.position_z) == (
            plain["patient"],
            plain["study"],
            plain["series"],
            plain["position"][2],
        )
        assert (header.patient_id, header.study_uid, header.series_uid, header.position_z) == intended[path.stem]
        assert plain["position"][:2] == [-125.0, -125.0] and not plain["instance_number"]
        assert (header.rows, header.columns) == (plain["rows"], plain["columns"]) == (32, 32)
        assert re.fullmatch(r"ID_[0-9a-f]{8}", header.patient_id)
        assert re.fullmatch(r"ID_[0-9a-f]{10}", header.study_uid) and re.fullmatch(r"ID_[0-9a-f]{10}", header.series_uid)
        study_patient.setdefault(header.study_uid, header.patient_id)
        assert study_patient[header.study_uid] == header.patient_id
        by_series[(header.patient_id, header.study_uid, header.series_uid)].append((header.position_z, path.stem))

    assert len(by_series) == 20 and len({key[1] for key in by_series}) == 20 and len({key[0] for key in by_series}) == 17
    series_per_patient = defaultdict(list)
    for patient, study, _ in by_series:
        series_per_patient[patient].append(study)
    assert sorted(len(studies) for studies in series_per_patient.values()).count(2) == 3

    # Complete the series of the missing file from the plan, then check spacing and contiguous bleeds along z.
    missing_patient, missing_study, missing_series, missing_z = intended[counts["missing_id"]]
    by_series[(missing_patient, missing_study, missing_series)].append((missing_z, counts["missing_id"]))
    shuffled = 0
    for slices in by_series.values():
        slices.sort()
        assert 20 <= len(slices) <= 42  # around 600 / 20 = 30
        assert np.allclose(np.diff([z for z, _ in slices]), 5.0)
        shuffled += [image for _, image in slices] != sorted(image for _, image in slices)
        for label in RSNA_ROW_ORDER:
            positive = np.flatnonzero([labels[f"{image}_{label}"] for _, image in slices])
            assert len(positive) == 0 or positive[-1] - positive[0] + 1 == len(positive), label
    assert shuffled >= 15  # file (ID) order is not z order


def test_files_render_and_decode(small_set):
    root, counts = small_set
    folder = root / "stage_2_train"
    labels = {line.split(",")[0]: int(line.split(",")[1]) for line in (root / "stage_2_train.csv").read_text().splitlines()[1:]}
    plan = plan_rsna_size_set(SMALL["images"], SMALL["series"], SMALL["patients"], SMALL["seed"])
    encoding_of = {
        plan.image_id(i): int(plan.series_encoding[s]) for s in range(20) for i in range(plan.starts[s], plan.starts[s + 1])
    }
    sample = sorted(folder.glob("*.dcm"))[::7]
    seen_encodings, fixed = set(), 0
    yy, xx = np.mgrid[:32, :32] + 0.5
    brain = ((yy - 16) / (0.42 * 32 * 0.8)) ** 2 + ((xx - 16) / (0.36 * 32 * 0.8)) ** 2 < 1
    for path in sample:
        if path.stem == counts["corrupt_id"]:
            continue
        rendered = render_file(path, path.stem, image_size=32)
        assert isinstance(rendered, RenderedSlice), (path.name, rendered)
        assert rendered.rgb.shape == (32, 32, 3) and rendered.rgb.dtype == np.uint8 and rendered.rgb.max() > 0
        ct = read_ct_slice(path.read_bytes(), path.stem)
        hu = to_hounsfield(ct.pixels, ct.slope, ct.intercept)
        assert abs(float(hu[0, 0]) + 1000) < 30 and hu.max() > 900  # air and bone, wrapped files too
        assert abs(float(np.median(hu[brain])) - 40) < 10
        blood = float(((hu[brain] > 58) & (hu[brain] < 90)).mean())
        assert (blood > 0.01) if labels[f"{path.stem}_any"] else (blood < 0.01)
        seen_encodings.add(encoding_of[path.stem])
        fixed += ct.intercept == -1000.0
    assert seen_encodings == {0, 1, 2} and fixed > 0

    corrupt = render_file(folder / f"{counts['corrupt_id']}.dcm", counts["corrupt_id"], image_size=32)
    assert isinstance(corrupt, str) and "truncated" in corrupt
    assert isinstance(read_header(folder / f"{counts['corrupt_id']}.dcm"), Header)
    assert render_file(folder / f"{counts['missing_id']}.dcm", counts["missing_id"], image_size=32) == FILE_MISSING


def test_same_output_for_any_worker_count(small_set, tmp_path):
    root, counts = small_set
    again = write_rsna_size_set(tmp_path, workers=1, **SMALL)
    assert {key: value for key, value in again.items() if key != "seconds"} == {
        key: value for key, value in counts.items() if key != "seconds"
    }
    assert (tmp_path / "stage_2_train.csv").read_bytes() == (root / "stage_2_train.csv").read_bytes()
    for path in (root / "stage_2_train").glob("*.dcm"):
        assert (tmp_path / "stage_2_train" / path.name).read_bytes() == path.read_bytes()
    other = plan_rsna_size_set(SMALL["images"], SMALL["series"], SMALL["patients"], seed=1)
    assert other.image_id(0) != plan_rsna_size_set(SMALL["images"], SMALL["series"], SMALL["patients"], seed=0).image_id(0)


def test_full_size_plan_structure_and_prevalence():
    plan = plan_rsna_size_set()  # RSNA 2019 size; no files
    counts = np.diff(plan.starts)
    assert counts.sum() == 752_803 and len(counts) == 21_745 and 23 <= counts.min() and counts.max() <= 47
    assert abs(counts.mean() - 34.6) < 0.1
    per_patient = np.bincount(plan.series_patient, minlength=18_939)
    assert per_patient.min() == 1 and (per_patient == 2).sum() == 21_745 - 18_939
    assert len(np.unique(plan.image_codes)) == 752_803
    assert len(np.unique(np.concatenate([plan.study_codes, plan.series_codes]))) == 2 * 21_745
    any_column = RSNA_ROW_ORDER.index(ANY)
    subtype_columns = [RSNA_ROW_ORDER.index(name) for name in SUBTYPES]
    assert (plan.labels[:, any_column] == plan.labels[:, subtype_columns].max(axis=1)).all()
    prevalence = plan.labels.mean(axis=0)
    for column, name in enumerate(RSNA_ROW_ORDER):
        assert abs(prevalence[column] / PREVALENCE[name] - 1) < 0.10, (name, prevalence[column])
    bleeding_series = np.add.reduceat(plan.labels[:, any_column], plan.starts[:-1]) > 0
    assert abs(bleeding_series.mean() - 0.40) < 0.01
