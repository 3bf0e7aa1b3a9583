"""`ich predict` and `ich evaluate-external`: a folder of DICOMs in, the contract's outputs out, the same numbers as
the preprocess -> PNG -> model path, and no untrusted text ever used as a path."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pydicom
import pytest
import tensorflow as tf
from sklearn.metrics import log_loss, roc_auc_score

import ich.imaging.png
import ich.imaging.slices
from harness.project import ROOT
from ich.cli import main as ich_main
from ich.core.labels import LABELS
from ich.core.params import ModelParams, SynthesizeParams, section
from ich.data.preprocess import process_many
from ich.data.synth import generate
from ich.imaging.windows import DEFAULT_WINDOWS
from ich.inference.cli import build_parser, run_predict
from ich.inference.explain import Explainer
from ich.inference.loading import load_models
from ich.inference.outputs import series_table
from ich.inference.predict import plan_chunks, predict_files
from ich.inference.scan import image_id_for, is_dicom_uid, scan_folder
from ich.models.card import model_card, save_model_folder
from ich.models.recipes import get_recipe
from ich.reports.predict_page import explanation_name

SIZE = 32
MODEL = {
    "arch": "convnext",
    "efficientnet": "efficientnetv2b0",
    "convnext": "convnext_atto",
    "weights": None,
    "dropout": 0.1,
    "fusion_units": 16,
    "online_augmentation": True,
    "combination": "product",
    "gate_threshold": 0.5,
    "context_slices": 0,
}
# Different per label, so a mixed-up label shows in the flag counts.
THRESHOLDS = {
    "any": 0.45,
    "epidural": 0.5,
    "intraparenchymal": 0.55,
    "intraventricular": 0.4,
    "subarachnoid": 0.6,
    "subdural": 0.52,
}
TRUNCATED_UID = "1.2.826.0.1.3680043.2.1125.77"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny single-network model folder (ConvNeXt-atto at 32 px, seeded random weights) as training writes it."""
    root = tmp_path_factory.mktemp("model")
    recipe, params = get_recipe("convnext"), section({"model": MODEL}, "model", ModelParams)
    keras.utils.set_random_seed(3)
    networks = {name: recipe.build(name, params, (SIZE, SIZE, 3)) for name in recipe.networks}
    checkpoints = {}
    for name, network in networks.items():
        checkpoints[name] = root / f"{name}.best.keras"
        network.save(checkpoints[name])
    windows = [{"name": window.name, "center": window.center, "width": window.width} for window in DEFAULT_WINDOWS]
    card = model_card(
        arch="convnext",
        described=recipe.describe(params),
        networks={name: f"{name}.keras" for name in networks},
        image_size=SIZE,
        windows=windows,
        weights=None,
        thresholds=THRESHOLDS,
    )
    return save_model_folder(root / "models", card, checkpoints)


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_models(model_dir)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Two patients, one series of six slices each, bleeds on some slices, in RSNA's layout (``ID_<hex>.dcm``)."""
    root = tmp_path_factory.mktemp("synthetic")
    config = SynthesizeParams(
        seed=11,
        patients=2,
        slices_per_series=6,
        image_size=64,
        second_study_fraction=0.0,
        hemorrhage_fraction=1.0,
        wrapped_fraction=0.0,
        nonsquare_fraction=0.0,
        multivalued_window_fraction=0.0,
        corrupt_files=0,
        missing_files=0,
        duplicate_rows=0,
        invalid_id_images=0,
    )
    generate(config, root)
    return root


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _series_files(synthetic: Path) -> dict[str, list[Path]]:
    """The synthetic DICOMs by SeriesInstanceUID (read with pydicom, independently of ich)."""
    found: dict[str, list[Path]] = {}
    for path in sorted((synthetic / "stage_2_train").glob("*.dcm")):
        found.setdefault(str(_header(path).SeriesInstanceUID), []).append(path)
    return found


def _z(path: Path) -> float:
    return float(_header(path).ImagePositionPatient[2])


def _run(folder: Path, out: Path, model_dir: Path, *options: str, explainer=None) -> dict:
    args = build_parser().parse_args([str(folder), "--models", str(model_dir), "--out", str(out), "--no-progress", *options])
    return run_predict(args, explainer_factory=(lambda model: explainer) if explainer is not None else None)


def _read_pngs(synthetic: Path, ids: list[str], png_dir: Path) -> np.ndarray:
    """The preprocess stage's PNGs of ``ids`` (its own code writes them), decoded as the evaluate stage's input
    pipeline decodes them (``tf.io.decode_png``)."""
    results = list(process_many(ids, synthetic / "stage_2_train", png_dir, SIZE, DEFAULT_WINDOWS, workers=1))
    assert all(result.metadata is not None for result in results)
    return np.stack([tf.io.decode_png(tf.io.read_file(str(png_dir / f"{image_id}.png")), channels=3).numpy() for image_id in ids])


# ------------------------------------------------------------------------------------- acceptance (a, b)
@pytest.fixture(scope="module")
def acceptance(tmp_path_factory, synthetic, model_dir):
    """One series under non-RSNA file names whose name order is the reverse of z, plus a file with truncated pixel
    data, run through the ``ich`` command."""
    root = tmp_path_factory.mktemp("acceptance")
    folder = root / "dicoms" / "patient-1" / "CT head"
    folder.mkdir(parents=True)
    series_uid, files = next(iter(_series_files(synthetic).items()))
    by_z = sorted(files, key=_z)
    names = {}
    for rank, path in enumerate(by_z):
        name = f"IM{len(by_z) - rank:04d}"  # the highest z gets IM0001: name order is the reverse of z order
        shutil.copyfile(path, folder / name)
        names[name] = str(_header(path).SOPInstanceUID)
    damaged = pydicom.dcmread(by_z[0])
    damaged.SOPInstanceUID = TRUNCATED_UID
    damaged.file_meta.MediaStorageSOPInstanceUID = TRUNCATED_UID
    damaged.PixelData = damaged.PixelData[: len(damaged.PixelData) // 3]
    damaged.save_as(folder / "broken.dcm", enforce_file_format=True)
    out = root / "out"
    ich_main(["predict", str(root / "dicoms"), "--models", str(model_dir), "--out", str(out), "--workers", "2", "--no-progress"])
    return {"out": out, "series": series_uid, "ids_by_z": [str(_header(path).SOPInstanceUID) for path in by_z], "names": names}


def test_acceptance_outputs_of_one_series_and_a_damaged_file(acceptance):
    out, ids = acceptance["out"], acceptance["ids_by_z"]
    submission = pd.read_csv(out / "submission.csv", dtype={"ID": str})
    assert list(submission.columns) == ["ID", "Label"]
    assert len(submission) == 6 * len(ids)
    assert sorted(submission["ID"]) == sorted(f"{image_id}_{label}" for image_id in ids for label in LABELS)
    assert submission["Label"].between(0, 1).all()
    slices = pd.read_csv(out / "slices.csv", dtype={"ID": str, "SeriesInstanceUID": str})
    by_row = submission.set_index("ID")["Label"]
    for row in slices.itertuples(index=False):
        for label in LABELS:
            assert by_row[f"{row.ID}_{label}"] == pytest.approx(getattr(row, label), abs=1e-12)
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert list(quarantine.columns) == ["ID", "reason", "file"]
    assert quarantine.to_dict("records") == [
        {"ID": TRUNCATED_UID, "reason": quarantine["reason"].iloc[0], "file": "patient-1/CT head/broken.dcm"}
    ]
    assert quarantine["reason"].iloc[0].startswith("pixel data truncated")
    series = pd.read_csv(out / "series.csv", dtype={"SeriesInstanceUID": str})
    assert series["SeriesInstanceUID"].tolist() == [acceptance["series"]] and series["slices"].tolist() == [len(ids)]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert page.count('src="data:image/jpeg;base64,') == len(ids)  # one thumbnail per readable slice
    assert "broken.dcm" in page and acceptance["series"] in page


def test_slices_are_in_z_order_not_file_name_order(acceptance):
    out, ids_by_z = acceptance["out"], acceptance["ids_by_z"]
    slices = pd.read_csv(out / "slices.csv", dtype={"ID": str})
    assert slices["ID"].tolist() == ids_by_z
    assert slices["position_z"].is_monotonic_increasing
    by_name = [acceptance["names"][name] for name in sorted(acceptance["names"])]
    assert by_name != ids_by_z  # the test means something: file names sort the other way
    page = (out / "report.html").read_text(encoding="utf-8")
    strip = page.split('<div class="strip">', 1)[1].split("</div>", 1)[0]
    assert re.findall(r'data-id="([^"]+)"', strip) == ids_by_z


# ------------------------------------------------------------------------------- same numbers as training (c, e)
def test_probabilities_equal_the_model_on_the_preprocess_stage_pngs(tmp_path, synthetic, model_dir, loaded):
    _run(synthetic / "stage_2_train", tmp_path / "out", model_dir, "--workers", "1")
    slices = pd.read_csv(tmp_path / "out" / "slices.csv", dtype={"ID": str, "SeriesInstanceUID": str})
    ids = sorted(path.stem for path in (synthetic / "stage_2_train").glob("*.dcm"))
    assert sorted(slices["ID"]) == ids
    headers = {image_id: _header(synthetic / "stage_2_train" / f"{image_id}.dcm") for image_id in ids}
    images = _read_pngs(synthetic, ids, tmp_path / "png")
    expected = loaded.predict_slices(
        images, [str(headers[i].SeriesInstanceUID) for i in ids], [float(headers[i].ImagePositionPatient[2]) for i in ids], ids
    ).final
    got = slices.set_index("ID").loc[ids, list(LABELS)].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_tta_is_the_mean_over_the_image_and_its_mirror(tmp_path, synthetic, model_dir, loaded):
    _run(synthetic / "stage_2_train", tmp_path / "out", model_dir, "--tta", "--workers", "1")
    slices = pd.read_csv(tmp_path / "out" / "slices.csv", dtype={"ID": str})
    ids = slices["ID"].tolist()
    images = _read_pngs(synthetic, ids, tmp_path / "png").astype(np.float32) / 255.0
    network = loaded.networks["model"]  # a single-network recipe: its sigmoid outputs are the six probabilities
    plain = np.asarray(network(images, training=False), dtype=np.float64)
    mirrored = np.asarray(network(np.ascontiguousarray(images[:, :, ::-1, :]), training=False), dtype=np.float64)
    assert not np.allclose(plain, mirrored, atol=1e-4)  # the mirror changes something, so the test can fail
    np.testing.assert_allclose(slices[list(LABELS)].to_numpy(), (plain + mirrored) / 2, atol=1e-5, rtol=0)


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"ich predict must not call {what}")

    return refused


def test_slices_are_rendered_in_memory_without_temporary_files_links_or_pngs(tmp_path, synthetic, loaded, monkeypatch):
    ids = sorted(path.stem for path in (synthetic / "stage_2_train").glob("*.dcm"))
    expected = dict(zip(ids, _read_pngs(synthetic, ids, tmp_path / "png")))  # the preprocess stage's PNGs, decoded
    scan = scan_folder(synthetic / "stage_2_train", workers=1)
    # Patched before the workers fork, so they hold in the worker processes too.
    for module, name in [
        (os, "symlink"),
        (os, "link"),
        (shutil, "copyfile"),
        (tempfile, "mkdtemp"),
        (tempfile, "TemporaryDirectory"),
        (ich.imaging.png, "encode_png"),
        (cv2, "imread"),
        (cv2, "imdecode"),
        (cv2, "imwrite"),
    ]:
        monkeypatch.setattr(module, name, _refuse(f"{module.__name__}.{name}"))
    seen: dict[str, np.ndarray] = {}

    def keep(frame: pd.DataFrame, images: np.ndarray) -> None:
        assert len(frame) == len(images)
        seen.update(zip(frame["ID"], images))

    prediction = predict_files(loaded, scan, workers=2, file_timeout_s=30, chunk_images=4, on_chunk=keep)
    assert prediction.quarantine.empty and sorted(prediction.slices["ID"]) == ids == sorted(seen)
    for image_id in ids:  # byte for byte the images the model saw in training
        np.testing.assert_array_equal(seen[image_id], expected[image_id])


def test_a_file_whose_decoder_hangs_or_kills_its_worker_is_quarantined_and_the_others_predicted(
    tmp_path, synthetic, loaded, monkeypatch
):
    folder = tmp_path / "in"
    shutil.copytree(synthetic / "stage_2_train", folder)
    ids = sorted(path.stem for path in folder.glob("*.dcm"))
    hang, exits, segfaults = ids[1], ids[6], ids[10]
    kept = [image_id for image_id in ids if image_id not in (hang, exits, segfaults)]
    headers = {image_id: _header(folder / f"{image_id}.dcm") for image_id in kept}
    expected = loaded.predict_slices(
        _read_pngs(synthetic, kept, tmp_path / "png"),
        [str(headers[i].SeriesInstanceUID) for i in kept],
        [float(headers[i].ImagePositionPatient[2]) for i in kept],
        kept,
    ).final
    scan = scan_folder(folder, workers=1)
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
    start = time.monotonic()
    prediction = predict_files(loaded, scan, workers=2, file_timeout_s=1.5, chunk_images=4)
    assert time.monotonic() - start < 60
    reasons = {
        hang: "timed out after 1.5 s (its worker process was stopped)",
        exits: "the worker process died while processing this file (exit code 3)",
        segfaults: "the worker process died while processing this file (killed by SIGSEGV)",
    }
    order = [item.image_id for item in scan.files]  # the quarantine lists them in prediction order
    assert prediction.quarantine.to_dict("records") == [
        {"ID": image_id, "reason": reasons[image_id], "file": f"{image_id}.dcm"} for image_id in sorted(reasons, key=order.index)
    ]
    assert sorted(prediction.slices["ID"]) == kept
    np.testing.assert_allclose(prediction.slices.set_index("ID").loc[kept, list(LABELS)].to_numpy(), expected, atol=1e-4, rtol=0)
    assert not multiprocessing.active_children()  # every worker, replaced ones included, was reaped


# ----------------------------------------------------------------------------------- series figures (d)
def test_series_table_by_hand():
    slices = pd.DataFrame(
        {
            "SeriesInstanceUID": ["s2", "s2", "s1", "s2"],
            **{label: [0.1, 0.5, 0.2, 0.45] for label in LABELS},
        }
    )
    slices["epidural"] = [0.9, 0.95, 0.0, 0.1]
    table = series_table(slices, THRESHOLDS)
    assert table["SeriesInstanceUID"].tolist() == ["s2", "s1"] and table["slices"].tolist() == [3, 1]
    assert table["any"].tolist() == [0.5, 0.2] and table["any_flagged"].tolist() == [2, 0]  # 0.5 and 0.45 >= 0.45
    assert table["epidural"].tolist() == [0.95, 0.0] and table["epidural_flagged"].tolist() == [2, 0]
    assert table["intraventricular_flagged"].tolist() == [2, 0]  # threshold 0.4
    assert table["subarachnoid_flagged"].tolist() == [0, 0]  # threshold 0.6


def test_series_csv_follows_from_slices_csv(acceptance):
    out = acceptance["out"]
    with open(out / "slices.csv", newline="") as stream:
        slices = list(csv.DictReader(stream))
    with open(out / "series.csv", newline="") as stream:
        (series,) = list(csv.DictReader(stream))
    assert int(series["slices"]) == len(slices)
    for label in LABELS:
        values = [float(row[label]) for row in slices]
        assert float(series[label]) == max(values)
        assert int(series[f"{label}_flagged"]) == sum(value >= THRESHOLDS[label] for value in values)


def test_one_threshold_for_every_label_overrides_the_card(tmp_path, synthetic, model_dir):
    summary = _run(
        synthetic / "stage_2_train", tmp_path / "out", model_dir, "--threshold", "0", "--workers", "1", "--report-series", "0"
    )
    assert summary["thresholds"] == {label: 0.0 for label in LABELS}
    series = pd.read_csv(tmp_path / "out" / "series.csv")
    for label in LABELS:
        assert (series[f"{label}_flagged"] == series["slices"]).all()


def test_chunks_hold_whole_series():
    series = ["a"] * 3 + ["b"] * 5 + ["c"] * 1 + ["d"] * 2
    assert [chunk.tolist() for chunk in plan_chunks(series, 4)] == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]
    assert [len(chunk) for chunk in plan_chunks(series, 1)] == [3, 5, 1, 2]
    assert plan_chunks([], 4) == []


# ------------------------------------------------------------------------------- untrusted text (f)
@pytest.mark.parametrize(
    ("stem", "uid", "expected"),
    [
        ("ID_0a1b", "1.2.3", "ID_0a1b"),
        ("IM0001", "ID_0a1b", "ID_0a1b"),
        ("IM0001", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2"),
        ("IM0001", "../../etc/passwd", None),
        ("ID_../../x", "", None),
        ("IM0001", "1.2/3", None),
        ("IM0001", "1.02.3", None),  # a zero-padded component is not a UID
        ("IM0001", "1..2", None),
        ("IM0001", "1." + "1" * 70, None),  # longer than 64 characters
        ("IM0001", ".", None),
        ("IM0001", "ID_ABC", None),  # RSNA IDs are lowercase hex
    ],
)
def test_image_ids_are_rsna_ids_or_dicom_uids_only(stem, uid, expected):
    assert image_id_for(stem, uid) == expected


def test_explanation_names_refuse_anything_but_ids_and_labels():
    assert explanation_name("ID_0a1b", "any") == "ID_0a1b_any.png"
    assert explanation_name("1.2.3", "subdural") == "1.2.3_subdural.png"
    for image_id, label in [
        ("../x", "any"),
        ("ID_1/..", "any"),
        (".hidden", "any"),
        ("ID_1", "../any"),
        ("ID_1", "bleed"),
        ("", "any"),
    ]:
        with pytest.raises(ValueError, match="Not a safe image ID"):
            explanation_name(image_id, label)
    assert is_dicom_uid("1.2.3") and not is_dicom_uid("1.2.3\n") and not is_dicom_uid(["1.2"])


def _fake_explainer() -> Explainer:
    """A stand-in for Grad-CAM: the red channel as the map, blended over the slice."""
    return Explainer(
        heatmaps=lambda inputs, label: np.asarray(inputs, dtype=np.float32)[..., 0] / 255.0,
        overlay=lambda image, heatmap: np.clip(image * 0.5 + heatmap[..., None] * 127, 0, 255).astype(np.uint8),
    )


def test_hostile_header_text_never_becomes_a_path(tmp_path, synthetic, model_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    sources = next(iter(_series_files(synthetic).values()))
    for index, path in enumerate(sources[:3]):
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = "../../../../escaped_series"
        if index == 0:
            dataset.SOPInstanceUID = "../../../../escaped_image"  # and no RSNA file name: no usable ID
            dataset.save_as(folder / "evil.dcm")
        else:
            dataset.save_as(folder / f"{dataset.SOPInstanceUID}.dcm")
    before = sorted(tmp_path.rglob("*"))
    out = tmp_path / "out"
    summary = _run(
        folder, out, model_dir, "--threshold", "0", "--explain-slices", "1", "--workers", "1", explainer=_fake_explainer()
    )
    assert (
        sorted(path for path in tmp_path.rglob("*") if out not in (path, *path.parents)) == before
    )  # nothing written beside out/
    assert not list(tmp_path.parents[1].rglob("*escaped*"))  # nor above it
    quarantine = pd.read_csv(out / "quarantine.csv", dtype=str, keep_default_na=False)
    assert quarantine["file"].tolist() == ["evil.dcm"] and quarantine["ID"].tolist() == [""]
    assert quarantine["reason"].iloc[0].startswith("no usable image ID")
    slices = pd.read_csv(out / "slices.csv", dtype=str)
    assert set(slices["SeriesInstanceUID"]) == {"../../../../escaped_series"}  # kept as data
    written = sorted(path.name for path in (out / "explanations").iterdir())
    # --explain-slices 1 and every label flagged: one slice, one map per label
    assert len(written) == len(LABELS) == summary["explanation_images"]
    assert all(re.fullmatch(r"ID_[0-9a-f]+_[a-z]+\.png", name) for name in written)
    assert all(path.parent == out for path in out.rglob("*") if path.is_file() and path.parent.name != "explanations")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "../../../../escaped_series" in page and 'data-label="subdural"' in page


def test_explanations_are_capped_per_series_and_drawn_for_flagged_slices_only(tmp_path, synthetic, model_dir):
    summary = _run(
        synthetic / "stage_2_train",
        tmp_path / "out",
        model_dir,
        "--threshold",
        "0",
        "--explain-slices",
        "2",
        "--workers",
        "1",
        explainer=_fake_explainer(),
    )
    assert summary["explanation_images"] == 2 * 2 * len(LABELS)  # two series, two slices each, six labels
    _run(
        synthetic / "stage_2_train",
        tmp_path / "out",
        model_dir,
        "--threshold",
        "1",
        "--workers",
        "1",
        explainer=_fake_explainer(),
    )
    assert list((tmp_path / "out" / "explanations").iterdir()) == []  # nothing flagged; the old maps are gone


# ------------------------------------------------------------------------------------------ errors
def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ich.predict", *args, "--no-progress"], cwd=cwd, capture_output=True, text=True)


def test_clear_one_line_errors(tmp_path, model_dir, synthetic):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("not a DICOM")
    result = _command(str(tmp_path / "empty"), "--models", str(model_dir), "--out", str(tmp_path / "out"), cwd=ROOT)
    assert result.returncode == 1 and re.fullmatch(r"error: No DICOM files found in .*\(1 files searched.*\n", result.stderr)
    result = _command(
        str(synthetic / "stage_2_train"), "--models", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), cwd=ROOT
    )
    assert result.returncode == 1 and re.fullmatch(
        r"error: Model folder .*nowhere.* not found or without model\.json.*\n", result.stderr
    )
    result = _command(str(tmp_path / "missing"), "--models", str(model_dir), "--out", str(tmp_path / "out"), cwd=ROOT)
    assert result.returncode == 1 and "does not exist or is not a folder" in result.stderr


def test_all_files_unreadable_is_an_error_with_the_quarantine_written(tmp_path, synthetic, model_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in list((synthetic / "stage_2_train").glob("*.dcm"))[:2]:
        dataset = pydicom.dcmread(path)
        dataset.PixelData = dataset.PixelData[:100]
        dataset.save_as(folder / path.name)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "submission.csv").write_text("ID,Label\nID_0_any,0.5\n")  # a previous run's
    with pytest.raises(SystemExit) as stopped:
        ich_main(
            [
                "predict",
                str(folder),
                "--models",
                str(model_dir),
                "--out",
                str(tmp_path / "out"),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
    assert stopped.value.code == 1
    assert re.search(
        r"error: None of the 2 files .* could be used\. Most common: 2 x pixel data truncated", capsys.readouterr().err
    )
    assert len(pd.read_csv(tmp_path / "out" / "quarantine.csv")) == 2
    assert not (tmp_path / "out" / "submission.csv").exists()


def test_the_ich_command_lists_its_subcommands(capsys):
    with pytest.raises(SystemExit) as stopped:
        ich_main(["--help"])
    assert stopped.value.code == 0 and "predict" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        ich_main(["train"])
    assert stopped.value.code == 2 and "unknown command 'train'" in capsys.readouterr().err


# --------------------------------------------------------------------------------- evaluate-external (g)
def test_evaluate_external_writes_the_evaluate_schema_and_sklearn_agrees(tmp_path, synthetic, model_dir):
    labels_csv = synthetic / "stage_2_train.csv"
    ich_main(
        [
            "evaluate-external",
            "--dicom-dir",
            str(synthetic / "stage_2_train"),
            "--labels-csv",
            str(labels_csv),
            "--models",
            str(model_dir),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap-draws",
            "200",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    metrics = json.loads((tmp_path / "out" / "evaluate.json").read_text())
    for label in LABELS:
        assert {"auc", "accuracy", "precision", "recall", "f1", "auc_ci95", "positives", "threshold", "tuned"} <= set(
            metrics[label]
        )
        assert metrics[label]["tuned"]["threshold"] == pytest.approx(THRESHOLDS[label])
    assert {
        "weighted_log_loss",
        "weighted_log_loss_ci95",
        "mean_subtype_auc",
        "macro",
        "prevalence",
        "images",
        "patients",
        "bootstrap",
        "series",
        "series_level",
        "external",
    } <= set(metrics)
    assert metrics["bootstrap"]["draws"] == 200 and metrics["patients"] == 2 and metrics["series"] == 2
    # Independently: the labels from the CSV by hand, the predictions from predictions.csv, the metric by sklearn.
    truth: dict[str, dict[str, int]] = {}
    with open(labels_csv, newline="") as stream:
        for row in csv.DictReader(stream):
            image_id, label = row["ID"].rsplit("_", 1)
            truth.setdefault(image_id, {})[label] = int(row["Label"])
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"ID": str})
    assert sorted(predictions["ID"]) == sorted(truth) and metrics["images"] == len(truth)
    y_true = np.array([[truth[image_id][label] for label in LABELS] for image_id in predictions["ID"]])
    y_prob = predictions[list(LABELS)].to_numpy()
    assert 0 < y_true[:, 0].sum() < len(y_true)  # both classes: the AUC is defined
    assert metrics["any"]["auc"] == pytest.approx(roc_auc_score(y_true[:, 0], y_prob[:, 0]), abs=1e-12)
    weights = np.array([2.0, 1, 1, 1, 1, 1])
    by_label = [log_loss(y_true[:, index], y_prob[:, index], labels=[0, 1]) for index in range(len(LABELS))]
    assert metrics["weighted_log_loss"] == pytest.approx(float(np.dot(weights, by_label) / 7), rel=1e-9)
    low, high = metrics["weighted_log_loss_ci95"]
    assert low <= high and math.isfinite(low)


def test_evaluate_external_refuses_labels_that_match_no_image(tmp_path, synthetic, model_dir, capsys):
    labels_csv = tmp_path / "other.csv"
    labels_csv.write_text(
        "ID,Label\n"
        + "".join(
            f"ID_ffff_{label},0\n"
            for label in ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")
        )
    )
    with pytest.raises(SystemExit) as stopped:
        ich_main(
            [
                "evaluate-external",
                "--dicom-dir",
                str(synthetic / "stage_2_train"),
                "--labels-csv",
                str(labels_csv),
                "--models",
                str(model_dir),
                "--out",
                str(tmp_path / "out"),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
    assert stopped.value.code == 1 and "None of the 1 labelled images is among the 12 predicted DICOMs" in capsys.readouterr().err
    quarantine = pd.read_csv(tmp_path / "out" / "quarantine.csv", dtype=str, keep_default_na=False)
    assert quarantine.to_dict("records") == [
        {"ID": "ID_ffff", "reason": "no DICOM with this image ID under --dicom-dir", "file": ""}
    ]


# ------------------------------------------------------------------------------------------ browser
@pytest.mark.slow
def test_report_opens_in_headless_chromium(acceptance, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine")
    page = acceptance["out"] / "report.html"
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-network-access",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "ICH predictions" in dom and acceptance["series"] in dom
    assert dom.count("<img") >= len(acceptance["ids_by_z"]) + 1  # the thumbnails and the chart survived parsing


# ------------------------------------------------------------------------------------------ Grad-CAM
def test_grad_cam_overlays_are_those_of_ich_explain_for_the_flagged_slice_and_label(tmp_path, synthetic, model_dir, loaded):
    from ich.inference.explain import gradcam, overlay

    summary = _run(
        synthetic / "stage_2_train", tmp_path / "out", model_dir, "--explain-slices", "1", "--workers", "1", "--threshold", "0"
    )
    written = sorted((tmp_path / "out" / "explanations").glob("*.png"))
    assert summary["explanations"] and len(written) == summary["explanation_images"] == 2 * len(LABELS)
    slices = pd.read_csv(tmp_path / "out" / "slices.csv", dtype={"ID": str})
    for path in written[:: len(LABELS) - 1]:  # a few of them: two labels of one series, one of the other
        image_id, label = path.stem.rsplit("_", 1)
        series_ids = slices.loc[slices["SeriesInstanceUID"] == slices.set_index("ID").loc[image_id, "SeriesInstanceUID"], "ID"]
        # --explain-slices 1: the slice with the highest P(any) of its series
        assert image_id == series_ids[slices.loc[series_ids.index, "any"].idxmax()]
        (image,) = _read_pngs(synthetic, [image_id], tmp_path / "png")
        expected = overlay(image, gradcam(loaded, image[None], label)[0])
        drawn = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(drawn, expected)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert page.count('data-label="') == summary["explanation_images"]


# ------------------------------------------------------------------------------------- with a sequence model
@pytest.fixture(scope="module")
def sequence_model_dir(tmp_path_factory, model_dir, loaded) -> Path:
    """The tiny CNN in ``cnn/`` and a sequence model (seeded random weights, so it changes the CNN's
    probabilities) in ``sequence/``, as the sequence stage writes a model folder."""
    from ich.models.sequence import build_sequence_model

    root = tmp_path_factory.mktemp("sequence") / "models"
    shutil.copytree(model_dir, root / "cnn")
    probe = tf.data.Dataset.from_tensor_slices(np.zeros((1, SIZE, SIZE, 3), np.float32)).batch(1)
    _, features = loaded.recipe.predict_with_features(loaded.networks, probe)
    keras.utils.set_random_seed(5)
    sequence = build_sequence_model(features.shape[1], projection=8, units=8)
    sequence.get_layer("correction").set_weights(
        [
            np.random.default_rng(0).normal(0, 0.5, w.shape).astype(np.float32)
            for w in sequence.get_layer("correction").get_weights()
        ]
    )
    (root / "sequence").mkdir()
    sequence.save(root / "sequence" / "sequence.keras")
    card = json.loads((model_dir / "model.json").read_text())
    card.update(
        cnn_dir="cnn",
        cnn_thresholds=dict(THRESHOLDS),
        thresholds={label: 0.5 for label in LABELS},
        sequence={"dir": "sequence", "file": "sequence.keras", "feature_dim": int(features.shape[1])},
    )
    (root / "model.json").write_text(json.dumps(card))
    return root


def test_with_a_sequence_model_slices_carry_both_and_evaluate_external_reports_both(tmp_path, synthetic, sequence_model_dir):
    model = load_models(sequence_model_dir)
    assert model.sequence is not None
    _run(synthetic / "stage_2_train", tmp_path / "out", sequence_model_dir, "--workers", "1", "--no-explain")
    slices = pd.read_csv(tmp_path / "out" / "slices.csv", dtype={"ID": str, "SeriesInstanceUID": str})
    ids = slices["ID"].tolist()
    headers = {image_id: _header(synthetic / "stage_2_train" / f"{image_id}.dcm") for image_id in ids}
    expected = model.predict_slices(
        _read_pngs(synthetic, ids, tmp_path / "png"),
        [str(headers[i].SeriesInstanceUID) for i in ids],
        [float(headers[i].ImagePositionPatient[2]) for i in ids],
        ids,
    )
    np.testing.assert_allclose(slices[list(LABELS)].to_numpy(), expected.final, atol=1e-4, rtol=0)
    np.testing.assert_allclose(slices[[f"cnn_{label}" for label in LABELS]].to_numpy(), expected.cnn, atol=1e-4, rtol=0)
    assert not np.allclose(expected.final, expected.cnn, atol=1e-3)  # the sequence model does change them
    ich_main(
        [
            "evaluate-external",
            "--dicom-dir",
            str(synthetic / "stage_2_train"),
            "--labels-csv",
            str(synthetic / "stage_2_train.csv"),
            "--models",
            str(sequence_model_dir),
            "--out",
            str(tmp_path / "external"),
            "--bootstrap-draws",
            "100",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    metrics = json.loads((tmp_path / "external" / "evaluate.json").read_text())
    predictions = pd.read_csv(tmp_path / "external" / "predictions.csv", dtype={"ID": str})
    truth = {}
    with open(synthetic / "stage_2_train.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            image_id, label = row["ID"].rsplit("_", 1)
            if label == "any":
                truth[image_id] = int(row["Label"])
    assert sorted(predictions["ID"]) == sorted(truth)
    y_true = [truth[image_id] for image_id in predictions["ID"]]
    assert metrics["by_model"]["cnn"]["any"]["auc"] == pytest.approx(roc_auc_score(y_true, predictions["cnn_any"]), abs=1e-12)
    assert (
        metrics["by_model"]["sequence"]["any"]["auc"]
        == metrics["any"]["auc"]
        == pytest.approx(roc_auc_score(y_true, predictions["any"]), abs=1e-12)
    )
    assert metrics["by_model"]["cnn"]["any"]["tuned"]["threshold"] == pytest.approx(THRESHOLDS["any"])
    assert metrics["any"]["tuned"]["threshold"] == 0.5
