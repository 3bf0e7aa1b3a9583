"""The out-of-distribution check (ich.inference.ood): its statistics against sklearn and numpy computed apart, the
threshold against numpy's percentile, and what `ich predict` and `ich evaluate-external` make of it (columns, banner,
summary, terminal line), with a tiny model whose statistics are set by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pydicom
import pytest
from sklearn.covariance import LedoitWolf

from ich.core.labels import LABELS
from ich.core.params import ModelParams, SynthesizeParams, section
from ich.data.preprocess import process_many
from ich.data.synth import generate
from ich.evaluate_external import main as evaluate_external_main
from ich.imaging.windows import DEFAULT_WINDOWS
from ich.inference.cli import build_parser, run_predict
from ich.inference.loading import load_models
from ich.inference.ood import (
    OOD_COLUMN,
    OodStats,
    fit_ood,
    load_ood,
    ood_entry,
    save_ood,
    score_series,
    series_means,
    shrunk_gaussian,
)
from ich.models.card import ModelCard, model_card, read_model_card, save_model_folder
from ich.models.recipes import get_recipe
from tests.helpers import write_long_csv

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


# ------------------------------------------------------------------------------------------- the statistics
def test_distance_by_hand():
    # one direction of variance 4 along x, the floor 1 elsewhere: (3-1)^2/4 + (2-1)^2/1 = 2
    stats = OodStats(
        location=np.array([1.0, 1.0]),
        components=np.array([[1.0, 0.0]]),
        variances=np.array([4.0]),
        floor=1.0,
        threshold=1.0,
        channel_mean=np.array([0.2, 0.2, 0.2]),
        channel_std=np.array([0.1, 0.1, 0.1]),
    )
    np.testing.assert_allclose(stats.distances(np.array([[3.0, 2.0], [1.0, 1.0], [1.0, 4.0]])), [np.sqrt(2.0), 0.0, 3.0])
    # window means: (0.2, 0.75, 0.2) is 5.5 standard deviations off in G; (0.25, 0.2, 0.1) at most 1
    np.testing.assert_allclose(stats.intensity_z(np.array([[0.2, 0.75, 0.2], [0.25, 0.2, 0.1]])), [5.5, 1.0])
    assert stats.flags(np.array([0.5, 1.5, 0.5]), np.array([1.0, 1.0, 5.5])).tolist() == [False, True, True]


@pytest.mark.parametrize("rows, width", [(12, 40), (60, 5)])  # fewer series than features (shrinkage needed), and more
def test_distances_are_sklearns_ledoit_wolf_mahalanobis_and_numpys(rows, width):
    rng = np.random.default_rng(rows)
    train = rng.normal(size=(rows, width)) * rng.uniform(0.5, 3.0, width) + rng.normal(size=width)
    probes = rng.normal(size=(7, width)) * 2.0
    location, components, variances, floor = shrunk_gaussian(train)
    stats = OodStats(location, components, variances, floor, 1.0, np.zeros(3), np.ones(3))
    fitted = LedoitWolf().fit(train)
    np.testing.assert_allclose(stats.distances(probes), np.sqrt(fitted.mahalanobis(probes)), rtol=1e-6)
    # numpy alone: the Ledoit-Wolf covariance (1 - s) S + s trace(S)/F I with sklearn's shrinkage s, inverted
    centred = train - train.mean(axis=0)
    empirical = centred.T @ centred / rows
    shrinkage = fitted.shrinkage_
    covariance = (1 - shrinkage) * empirical + shrinkage * np.trace(empirical) / width * np.eye(width)
    offsets = probes - train.mean(axis=0)
    expected = np.sqrt(np.einsum("ij,jk,ik->i", offsets, np.linalg.inv(covariance), offsets))
    np.testing.assert_allclose(stats.distances(probes), expected, rtol=1e-6)
    assert len(variances) <= min(rows - 1, width) and components.shape == (len(variances), width)


def test_series_means_keep_the_order_of_first_appearance():
    keys, means = series_means(np.array([[1.0, 0.0], [3.0, 2.0], [10.0, 5.0], [0.0, 1.0]]), ["b", "b", "a", "c"], block=3)
    assert keys.tolist() == ["b", "a", "c"]
    np.testing.assert_allclose(means, [[2.0, 1.0], [10.0, 5.0], [0.0, 1.0]])


def _slices(rng: np.random.Generator, series: int, prefix: str, width: int = 20, per: int = 4):
    features = rng.normal(size=(series * per, width)) + np.repeat(rng.normal(size=(series, width)), per, axis=0)
    channels = 0.2 + 0.01 * rng.normal(size=(series * per, 3))
    return features, channels, np.repeat([f"{prefix}{index}" for index in range(series)], per)


def test_the_threshold_is_the_99th_percentile_of_the_validation_series():
    rng = np.random.default_rng(5)
    train, val = _slices(rng, 30, "t"), _slices(rng, 25, "v")
    stats, record = fit_ood(*train, *val)
    # independently: series means by pandas, distances by sklearn
    means = {
        name: pd.DataFrame(part[0]).groupby(part[2], sort=False).mean().to_numpy() for name, part in (("t", train), ("v", val))
    }
    distances = np.sqrt(LedoitWolf().fit(means["t"]).mahalanobis(means["v"]))
    assert stats.threshold == pytest.approx(np.percentile(distances, 99), rel=1e-6)
    assert record["val_distance_false_alarm_rate"] == pytest.approx(np.mean(distances > np.percentile(distances, 99)), abs=1e-4)
    assert record["train_series"] == 30 and record["val_series"] == 25 and record["threshold"] == stats.threshold
    windows = pd.DataFrame(train[1]).groupby(train[2], sort=False).mean().to_numpy()
    np.testing.assert_allclose(stats.channel_mean, windows.mean(axis=0))
    np.testing.assert_allclose(stats.channel_std, windows.std(axis=0))


def test_too_few_series_and_mismatched_features_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 2 training series. Received: 1"):
        fit_ood(*_slices(rng, 1, "t"), *_slices(rng, 3, "v"))
    stats, _ = fit_ood(*_slices(rng, 4, "t"), *_slices(rng, 3, "v"))
    with pytest.raises(ValueError, match="features have 7 dimensions, its out-of-distribution statistics 20"):
        score_series(stats, np.zeros((2, 7)), np.zeros((2, 3)), ["a", "a"])
    path = save_ood(stats, tmp_path / "ood.npz")
    loaded = load_ood(path)
    np.testing.assert_array_equal(loaded.components, stats.components)
    assert loaded.threshold == stats.threshold and loaded.floor == stats.floor
    arrays = dict(np.load(path))
    del arrays["variances"]
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="lacks variances: rerun `dvc repro sequence`"):
        load_ood(tmp_path / "old.npz")


def test_the_card_names_a_plain_npz_file_in_its_folder(tmp_path):
    card = {"arch": "convnext", "files": {}, "image_size": 32, "windows": [], "thresholds": {}}
    entry = {"dir": "sequence", "file": "ood.npz", "method": "m", "threshold": 3.0}
    assert ood_entry(ModelCard.model_validate({**card, "ood": entry})).threshold == 3.0  # type: ignore[union-attr]
    assert ood_entry(ModelCard.model_validate(card)) is None  # cards written before the check existed
    for field, value in (("file", "../ood.npz"), ("file", "ood.pkl"), ("dir", "..")):
        (tmp_path / "model.json").write_text(json.dumps({**card, "ood": {**entry, field: value}}))
        with pytest.raises(ValueError, match=f"ood.{field}"):
            ood_entry(read_model_card(tmp_path))


# ------------------------------------------------------------------------------------ ich predict's outputs
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Two patients, one series of five slices each (RSNA layout, 64 px)."""
    root = tmp_path_factory.mktemp("synthetic")
    config = SynthesizeParams(
        seed=23,
        patients=2,
        slices_per_series=5,
        image_size=64,
        second_study_fraction=0.0,
        wrapped_fraction=0.0,
        nonsquare_fraction=0.0,
        multivalued_window_fraction=0.0,
        corrupt_files=0,
        missing_files=0,
        duplicate_rows=0,
        invalid_id_images=0,
    )
    generate(config, root)
    return root / "stage_2_train"


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """A tiny model folder as the train stage writes it: no out-of-distribution statistics."""
    root = tmp_path_factory.mktemp("model")
    recipe, params = get_recipe("convnext"), section({"model": MODEL}, "model", ModelParams)
    keras.utils.set_random_seed(4)
    checkpoints = {}
    for name in recipe.networks:
        checkpoints[name] = root / f"{name}.best.keras"
        recipe.build(name, params, (SIZE, SIZE, 3)).save(checkpoints[name])
    card = model_card(
        arch="convnext",
        described=recipe.describe(params),
        networks={name: f"{name}.keras" for name in recipe.networks},
        image_size=SIZE,
        windows=[{"name": window.name, "center": window.center, "width": window.width} for window in DEFAULT_WINDOWS],
        weights=None,
        thresholds={label: 0.5 for label in LABELS},
    )
    return save_model_folder(root / "models", card, checkpoints)


@pytest.fixture(scope="module")
def series_features(synthetic, plain_model, tmp_path_factory) -> pd.DataFrame:
    """Per series (pydicom's UIDs): the mean pooled features of its slices, from the preprocess stage's PNGs."""
    files = sorted(synthetic.glob("*.dcm"))
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    ids = [path.stem for path in files]
    png_dir = tmp_path_factory.mktemp("png")
    list(process_many(ids, synthetic, png_dir, SIZE, DEFAULT_WINDOWS, workers=1))
    images = np.stack([cv2.cvtColor(cv2.imread(str(png_dir / f"{image_id}.png")), cv2.COLOR_BGR2RGB) for image_id in ids])
    series = [str(header.SeriesInstanceUID) for header in headers]
    z = [float(header.ImagePositionPatient[2]) for header in headers]
    _, features = load_models(plain_model).cnn_outputs(images, series, z, ids, with_features=True)
    return pd.DataFrame(features).groupby(series).mean()


def _with_stats(plain_model: Path, folder: Path, stats: OodStats) -> Path:
    """A copy of ``plain_model`` with ``stats`` as its out-of-distribution statistics."""
    shutil.copytree(plain_model, folder)
    (folder / "statistics").mkdir()
    save_ood(stats, folder / "statistics" / "ood.npz")
    card = json.loads((folder / "model.json").read_text())
    card["ood"] = {"dir": "statistics", "file": "ood.npz", "method": "by hand", "threshold": stats.threshold}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


def _predict(folder: Path, out: Path, models: Path, *options: str) -> dict:
    return run_predict(
        build_parser().parse_args(
            [str(folder), "--models", str(models), "--out", str(out), "--no-progress", "--workers", "1", *options]
        )
    )


def test_predict_flags_the_series_far_from_the_training_mean(tmp_path, synthetic, plain_model, series_features, capsys):
    # Statistics by hand: the mean at the first series' features, unit variance in every direction (Euclidean
    # distance), the threshold halfway to the second series; window means of any value pass.
    near, far = series_features.index.tolist()
    gap = float(np.linalg.norm(series_features.loc[far] - series_features.loc[near]))
    stats = OodStats(
        location=series_features.loc[near].to_numpy(),
        components=np.zeros((0, series_features.shape[1])),
        variances=np.zeros(0),
        floor=1.0,
        threshold=gap / 2,
        channel_mean=np.full(3, 0.5),
        channel_std=np.ones(3),
    )
    models = _with_stats(plain_model, tmp_path / "models", stats)
    summary = _predict(synthetic, tmp_path / "out", models, "--no-explain", "--dicom-sr")
    assert "1 of 2 series lie outside the training data" in capsys.readouterr().err
    series = pd.read_csv(tmp_path / "out" / "series.csv").set_index("SeriesInstanceUID")
    assert list(series.columns[-3:]) == ["ood_distance", "ood_intensity_z", OOD_COLUMN]
    assert series.loc[near, "ood_distance"] == pytest.approx(0.0, abs=1e-3 * gap)
    assert series.loc[far, "ood_distance"] == pytest.approx(gap, rel=1e-3)
    assert series[OOD_COLUMN].to_dict() == {near: False, far: True}
    slices = pd.read_csv(tmp_path / "out" / "slices.csv")
    assert (slices[OOD_COLUMN] == (slices["SeriesInstanceUID"] == far)).all() and len(slices) == 10
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["ood_series"] == summary["ood_series"] == 1 and written["ood_checked"] is True
    assert written["ood_threshold"] == pytest.approx(gap / 2)
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'class="banner ood"' in page and "1 of 2 series lie outside the training data" in page
    assert page.count('data-ood="true"') == 1 and f'data-series="{far}" data-ood="true"' in page
    # the DICOM SR of each series carries the flag
    flags = {}
    for entry in summary["sr_files"]:
        report = pydicom.dcmread(tmp_path / "out" / entry["file"])
        flags[entry["SeriesInstanceUID"]] = [
            item.ConceptCodeSequence[0].CodeMeaning for item in _items(report) if _code(item) == "ood"
        ]
    assert flags == {near: ["Absent"], far: ["Present"]}
    # evaluate-external scores the same series the same way
    labels = write_long_csv(tmp_path / "labels.csv", {path.stem: {} for path in synthetic.glob("*.dcm")})
    evaluate_external_main(
        ["--dicom-dir", str(synthetic), "--labels-csv", str(labels), "--models", str(models), "--out", str(tmp_path / "ext")]
        + ["--no-progress", "--workers", "1", "--bootstrap-draws", "10"]
    )
    assert "1 of 2 series lie outside the training data" in capsys.readouterr().err
    external = json.loads((tmp_path / "ext" / "evaluate.json").read_text())["external"]
    assert external["ood_series"] == 1 and external["series"] == 2
    predictions = pd.read_csv(tmp_path / "ext" / "predictions.csv")
    assert predictions[OOD_COLUMN].sum() == 5


def _code(item) -> str | None:
    return item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else None


def _items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def test_a_model_folder_without_statistics_predicts_and_says_so(tmp_path, synthetic, plain_model, capsys):
    summary = _predict(synthetic, tmp_path / "out", plain_model, "--no-explain")
    assert "no out-of-distribution statistics" in capsys.readouterr().err
    assert summary["ood_checked"] is False and summary["ood_series"] is None and summary["ood_threshold"] is None
    assert "ood_distance" not in pd.read_csv(tmp_path / "out" / "series.csv").columns
    assert OOD_COLUMN not in pd.read_csv(tmp_path / "out" / "slices.csv").columns
    page = (tmp_path / "out" / "report.html").read_text()
    assert "no out-of-distribution statistics" in page and 'class="banner' not in page
