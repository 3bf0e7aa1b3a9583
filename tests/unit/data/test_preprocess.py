import multiprocessing
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

import ich.data.preprocess
import ich.imaging.slices
from ich.core.labels import LABELS
from ich.core.quarantine import quarantine_failure
from ich.data.preprocess import FileResult, collect_outcome, process_many
from ich.imaging.dicom import CtSlice, read_ct_slice
from ich.imaging.rendering import render_rgb
from ich.imaging.windows import compose_rgb
from tests.helpers import ct_dicom_bytes


def _slice(stored, **kwargs):
    return read_ct_slice(ct_dicom_bytes(stored, **kwargs), "ID_ab")


def test_render_equals_windows_then_area_resize():
    rng = np.random.default_rng(0)
    stored = rng.integers(900, 1200, size=(64, 64))  # HU -124..176: every window clips somewhere
    rgb = render_rgb(_slice(stored), 32)
    reference = compose_rgb(stored - 1024.0).astype(np.float64)
    reference = reference.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb - reference).max() <= 1.0  # rounding only


@pytest.mark.parametrize(
    ("low", "high", "representation", "intercept"),
    [(-2000, 2500, 1, 0.0), (0, 4095, 0, -1024.0), (30000, 65535, 0, -40000.0), (-32768, 32767, 1, 0.0)],
)
def test_render_of_16_bit_values_of_either_sign_equals_the_float_windows(low, high, representation, intercept):
    # The 16-bit index arithmetic (value - low mod 2**16) against plain float windows of every stored value.
    rng = np.random.default_rng(low & 0xFFFF)
    stored = rng.integers(low, high + 1, size=(32, 32))
    stored[0, 0], stored[-1, -1] = low, high  # both ends of the range
    ct = read_ct_slice(ct_dicom_bytes(stored, intercept=intercept, pixel_representation=representation), "ID_ab")
    assert ct.pixels.dtype == (np.int16 if representation else np.uint16)
    rgb = render_rgb(ct, 32)  # no resize: every pixel is one lookup
    np.testing.assert_array_equal(rgb, compose_rgb(stored.astype(np.float64) + intercept))


def test_non_square_slice_is_padded_with_air_keeping_aspect():
    stored = np.full((40, 20), 1024 + 40)
    stored[0, 0] = 0  # one air pixel so the image is not blank
    rgb = render_rgb(_slice(stored), 40)
    assert rgb.shape == (40, 40, 3)
    assert (rgb[:, :10] == 0).all() and (rgb[:, 30:] == 0).all()
    assert rgb[20, 20, 1] == 128  # brain window of 40 HU


@pytest.mark.parametrize("workers", [1, 2])
def test_process_many_writes_pngs_and_quarantines_with_reasons(tmp_path, workers):
    dicom_dir, png_dir = tmp_path / "dicom", tmp_path / "png"
    dicom_dir.mkdir()
    good = np.arange(256).reshape(16, 16) + 900
    for index in range(6):
        (dicom_dir / f"ID_{index:x}0.dcm").write_bytes(ct_dicom_bytes(good))
    (dicom_dir / "ID_bad.dcm").write_bytes(b"garbage")
    ids = [f"ID_{index:x}0" for index in range(6)] + ["ID_bad", "ID_missing0", "ID_../../etc"]
    ids[-2] = "ID_ffff"
    results = list(process_many(ids, dicom_dir, png_dir, image_size=8, workers=workers))
    assert [result.image_id for result in results] == ids
    written = sorted(path.name for path in png_dir.iterdir())
    assert written == sorted(f"ID_{index:x}0.png" for index in range(6))
    reasons = {result.image_id: result.reason for result in results if result.reason}
    assert reasons["ID_bad"].startswith("not a DICOM file")
    assert reasons["ID_ffff"].startswith("file missing")
    assert reasons["ID_../../etc"].startswith("invalid image ID")
    assert not (tmp_path / "etc.png").exists()


def test_render_of_a_huge_value_range_windows_each_pixel():
    # 2 million distinct stored values (damaged 32-bit data): no lookup table, the same window arithmetic.
    # HU -1024, 1998976, 40, 0 -> blood (80/200, from -20): 0, 255, 76.5 -> 76, 25.5 -> 26 (half to even);
    # brain (40/80, from 0): 0, 255, 127.5 -> 128, 0; bone (600/2800, from -800): 0, 255, 76.5 -> 76, 72.9 -> 73.
    ct = CtSlice(np.array([[0, 2_000_000], [1064, 1024]], dtype=np.int32), 1.0, -1024.0, {})
    assert render_rgb(ct, 2).tolist() == [[[0, 0, 0], [255, 255, 255]], [[76, 128, 76], [26, 0, 73]]]


def _good_dicoms(dicom_dir, count):
    dicom_dir.mkdir()
    ids = [f"ID_{index:04x}" for index in range(count)]
    for image_id in ids:
        (dicom_dir / f"{image_id}.dcm").write_bytes(ct_dicom_bytes(np.arange(256).reshape(16, 16) + 900))
    return ids


def test_a_hanging_or_dying_decoder_costs_only_its_file(tmp_path, monkeypatch):
    ids = _good_dicoms(tmp_path / "dicom", 40)
    hang, exits, segfaults = ids[5], ids[12], ids[30]
    real_reader = ich.imaging.slices.read_ct_slice

    def planted_reader(data, image_id, *args):
        if image_id == hang:
            time.sleep(600)
        elif image_id == exits:
            os._exit(3)
        elif image_id == segfaults:
            os.kill(os.getpid(), signal.SIGSEGV)
        return real_reader(data, image_id, *args)

    # Worker processes are forked from this one, so they run the planted reader.
    monkeypatch.setattr(ich.imaging.slices, "read_ct_slice", planted_reader)
    # Chunks of 4: files 0-3 travel without the hanging file; 4-7 with it, so they are run again one a task.
    monkeypatch.setattr(ich.data.preprocess, "_CHUNK_SIZE", 4)
    start = time.monotonic()
    arrivals = []
    results = []
    for result in process_many(ids, tmp_path / "dicom", tmp_path / "png", 8, workers=2, file_timeout_s=1.5):
        arrivals.append(time.monotonic() - start)
        results.append(result)
    elapsed = time.monotonic() - start

    assert [result.image_id for result in results] == ids
    reasons = {result.image_id: result.reason for result in results if result.reason}
    assert reasons == {
        hang: "timed out after 1.5 s (its worker process was stopped)",
        exits: "the worker process died while processing this file (exit code 3)",
        segfaults: "the worker process died while processing this file (killed by SIGSEGV)",
    }
    assert sorted(path.stem for path in (tmp_path / "png").glob("*.png")) == sorted(set(ids) - set(reasons))
    assert 1.5 <= elapsed < 30
    assert max(arrivals[:4]) < 1.5  # results of the chunk before the hanging one streamed out while it hung
    assert not multiprocessing.active_children()  # every worker, replaced ones included, was reaped


def test_without_a_time_limit_one_worker_runs_in_this_process(tmp_path, monkeypatch):
    ids = _good_dicoms(tmp_path / "dicom", 3)
    seen = []
    real_reader = ich.imaging.slices.read_ct_slice
    monkeypatch.setattr(
        ich.imaging.slices,
        "read_ct_slice",
        lambda data, image_id, *args: (seen.append(os.getpid()), real_reader(data, image_id, *args))[1],
    )
    assert all(result.reason is None for result in process_many(ids, tmp_path / "dicom", tmp_path / "png", 8, workers=1))
    assert seen == [os.getpid()] * 3


def test_process_many_checks_its_options(tmp_path):
    with pytest.raises(ValueError, match="auto, off"):
        list(process_many(["ID_0a"], tmp_path, tmp_path / "png", 8, rsna_pixel_fix="yes"))
    with pytest.raises(ValueError, match="file_timeout_s must be > 0"):
        list(process_many(["ID_0a"], tmp_path, tmp_path / "png", 8, file_timeout_s=0))


def _results():
    metadata = {
        "ID": "ID_01",
        "PatientID": "ID_p1",
        "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3",
        "position_z": 1.5,
        "rows": 16,
        "columns": 16,
    }
    return [
        FileResult("ID_01", metadata, None),
        FileResult("ID_02", None, "blank image (all pixels have the same value)"),
        FileResult("ID_03", None, "blank image (all pixels have the same value)"),
        FileResult("ID_04", None, "file missing: no <ID>.dcm in data.dicom_dir"),
    ]


def _sampled():
    rows = []
    for number, split in zip(range(1, 6), ("train", "val", "val", "test", "test")):
        rows.append(
            {
                "ID": f"ID_0{number}",
                **{label: int(number == 1) for label in LABELS},
                "PatientID": f"P{number}",
                "StudyInstanceUID": "1.2",
                "SeriesInstanceUID": f"1.2.{number}",
                "position_z": float(number),
                "split": split,
            }
        )
    return pd.DataFrame(rows)


def test_collect_outcome_builds_the_split_tables_and_the_quarantine():
    earlier = pd.DataFrame(
        {"ID": ["ID_09", "ID_../x"], "reason": ["labels: conflicting labels", "labels: image ID does not match"]}
    )
    results = _results() + [FileResult("ID_05", {"ID": "ID_05"}, None)]
    outcome = collect_outcome(results, _sampled(), earlier)
    assert outcome.tables["train"]["ID"].tolist() == ["ID_01"]
    assert outcome.tables["val"].empty  # ID_02 and ID_03 were unusable
    assert outcome.tables["test"]["ID"].tolist() == ["ID_05"]  # ID_04 missing
    assert list(outcome.tables["train"].columns) == [
        "ID",
        *LABELS,
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "position_z",
    ]
    assert outcome.quarantine.values.tolist() == [
        ["ID_09", "labels: conflicting labels"],
        ["ID_../x", "labels: image ID does not match"],
        ["ID_02", "blank image (all pixels have the same value)"],
        ["ID_03", "blank image (all pixels have the same value)"],
        ["ID_04", "file missing: no <ID>.dcm in data.dicom_dir"],
    ]
    assert outcome.metrics["quarantined"] == 3 and outcome.metrics["png_written"] == 2
    assert outcome.reasons["blank image (all pixels have the same value)"] == 2
    # 3 of 5 unusable: 60 %
    assert quarantine_failure(3, 5, outcome.reasons, 0.6, "q.csv") is None
    message = quarantine_failure(3, 5, outcome.reasons, 0.5, "q.csv")
    assert "3 of 5 sampled images (60.0%)" in message and "2 x blank image" in message and "q.csv" in message
