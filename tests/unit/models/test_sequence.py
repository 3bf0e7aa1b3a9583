"""The sequence model: inputs per series, masking, per-slice outputs in series order, augmentation, training,
the model folder with a sequence part, the resumable feature store, and 2.5D in the input pipeline."""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from ich.core.labels import LABELS
from ich.core.params import ModelParams, SequenceParams, section
from ich.data.augment import write_augmented
from ich.data.context import series_order, series_runs
from ich.evaluation.metrics import weighted_log_loss
from ich.inference.features import FeatureStore, predict_frame, series_chunks
from ich.inference.loading import load_models
from ich.models.card import folder_card, model_card, save_model_folder
from ich.models.recipes import get_recipe
from ich.models.sequence import (
    SeriesBatches,
    SeriesSet,
    build_sequence_model,
    fit_sequence,
    pad_series,
    predict_series,
    series_inputs,
    slice_inputs,
)
from ich.training.datasets import make_dataset

SEQUENCE = {
    "enabled": True,
    "seed": 0,
    "epochs": 25,
    "early_stopping_patience": 25,
    "batch_series": 8,
    "learning_rate": 0.01,
    "units": 8,
    "layers": 1,
    "projection": 4,
    "dropout": 0.0,
    "crop": 0,
    "reverse_p": 0.5,
    "batch_size": 16,
}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _randomised(model: keras.Model, seed: int = 0) -> keras.Model:
    """The zero-initialised correction head given random weights, so outputs depend on the context."""
    rng = np.random.default_rng(seed)
    head = model.get_layer("correction")
    head.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in head.get_weights()])
    return model


def test_series_inputs_hold_the_logits_and_their_differences_to_the_neighbours_by_hand():
    probabilities = np.array([[0.5] * 6, [0.8] * 6, [0.2] * 6])
    rows = slice_inputs(np.ones((3, 2)), probabilities)
    logit = np.log(0.8 / 0.2)  # logit(0.5) = 0, logit(0.2) = -logit(0.8)
    np.testing.assert_allclose(rows[:, 2:], [[0] * 6, [logit] * 6, [-logit] * 6], rtol=1e-6)
    inputs = series_inputs(rows)
    assert inputs.shape == (3, 2 + 18)
    np.testing.assert_allclose(inputs[:, 8:14], [[0] * 6, [logit] * 6, [-2 * logit] * 6], rtol=1e-6)  # minus previous
    np.testing.assert_allclose(inputs[:, 14:], [[-logit] * 6, [2 * logit] * 6, [0] * 6], rtol=1e-6)  # minus next


def test_an_untrained_sequence_model_returns_the_cnn_probabilities():
    model = build_sequence_model(3, projection=4, units=4)
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.01, 0.99, size=(7, 6))
    rows = slice_inputs(rng.normal(size=(7, 3)), probabilities)
    runs = [np.array([3, 0, 5]), np.array([1, 6, 2, 4])]
    np.testing.assert_allclose(predict_series(model, rows, runs), probabilities, rtol=1e-5)


def test_padding_never_changes_a_real_slices_output():
    model = _randomised(build_sequence_model(5, projection=4, units=4, layers_count=2))
    rng = np.random.default_rng(1)
    inputs = series_inputs(slice_inputs(rng.normal(size=(6, 5)), rng.uniform(0.05, 0.95, size=(6, 6))))
    alone, alone_mask = pad_series([inputs])
    padded, padded_mask = pad_series([inputs], length=11)
    assert padded_mask.tolist() == [[1] * 6 + [0] * 5]
    out_alone = model.predict_on_batch({"slices": alone, "mask": alone_mask})[0]
    out_padded = model.predict_on_batch({"slices": padded, "mask": padded_mask})[0]
    np.testing.assert_allclose(out_padded[:6], out_alone, atol=1e-6)
    # batched beside a longer series, too
    longer = series_inputs(slice_inputs(rng.normal(size=(9, 5)), rng.uniform(0.05, 0.95, size=(9, 6))))
    batch, batch_mask = pad_series([inputs, longer])
    np.testing.assert_allclose(model.predict_on_batch({"slices": batch, "mask": batch_mask})[0, :6], out_alone, atol=1e-6)
    # and the context matters: a real slice's output changes when another slice of its series changes
    changed = inputs.copy()
    changed[5] += 3.0
    other = model.predict_on_batch({"slices": changed[None], "mask": alone_mask})[0]
    assert np.abs(other[0] - out_alone[0]).max() > 1e-4


def test_outputs_are_per_slice_in_the_series_order_whatever_the_row_order():
    model = _randomised(build_sequence_model(2, projection=2, units=3, layers_count=1), seed=3)
    rng = np.random.default_rng(2)
    features, probabilities = rng.normal(size=(5, 2)), rng.uniform(0.05, 0.95, size=(5, 6))
    z = np.array([4.0, 1.0, 3.0, 2.0, 0.0])
    series = ["s"] * 5
    rows = slice_inputs(features, probabilities)
    predicted = predict_series(model, rows, series_runs(series, series_order(series, z)))
    # by hand: the series in z order is rows 4, 1, 3, 2, 0; the model's t-th output belongs to that row
    z_order = [4, 1, 3, 2, 0]
    direct = model.predict_on_batch({"slices": series_inputs(rows[z_order])[None], "mask": np.ones((1, 5), np.float32)})[0]
    np.testing.assert_allclose(predicted[z_order], direct, rtol=1e-5)
    # shuffling the rows (and their positions) moves the outputs with them
    shuffle = np.array([2, 0, 4, 1, 3])
    again = predict_series(model, rows[shuffle], series_runs(series, series_order(series, z[shuffle])))
    np.testing.assert_allclose(again, predicted[shuffle], rtol=1e-5)


def test_a_reversed_training_series_is_the_series_read_backwards():
    rng = np.random.default_rng(4)
    rows = slice_inputs(rng.normal(size=(5, 3)), rng.uniform(0.05, 0.95, size=(5, 6)))
    targets = (rng.random((5, 6)) > 0.5).astype(np.float32)
    batches = SeriesBatches([series_inputs(rows)], [targets], batch_series=1, crop=0, reverse_p=1.0, seed=0)
    ((inputs, target, weight),) = list(batches.epoch())
    np.testing.assert_allclose(inputs["slices"][0], series_inputs(rows[::-1]), rtol=1e-6)
    np.testing.assert_array_equal(target[0], targets[::-1])
    assert weight.tolist() == [[1.0] * 5]
    cropped = SeriesBatches([series_inputs(rows)] * 3, [targets] * 3, batch_series=3, crop=2, reverse_p=0.0, seed=0)
    ((inputs, target, weight),) = list(cropped.epoch())
    assert inputs["slices"].shape == (3, 2, 3 + 18) and weight.sum() == 6
    for crop, labels in zip(inputs["slices"], target):  # each crop is two consecutive slices of the series
        start = int(np.flatnonzero(np.all(np.isclose(series_inputs(rows)[:, :3], crop[0, :3]), axis=1))[0])
        np.testing.assert_array_equal(labels, targets[start : start + 2])


def _toy_series(count: int, seed: int) -> SeriesSet:
    """Series of 10 slices; a bleed spans consecutive slices; the 'CNN' sees it with heavy per-slice noise."""
    rng = np.random.default_rng(seed)
    rows, targets, runs, start = [], [], [], 0
    for _ in range(count):
        truth = np.zeros((10, 6), np.float32)
        if rng.random() < 0.6:
            first = rng.integers(0, 6)
            truth[first : first + 4, 0] = truth[first : first + 4, 1 + rng.integers(0, 5)] = 1
        logits = np.where(truth > 0, 1.0, -1.0) + rng.normal(scale=1.6, size=truth.shape)
        rows.append(slice_inputs(rng.normal(size=(10, 2)), _sigmoid(logits)))
        targets.append(truth)
        runs.append(np.arange(start, start + 10))
        start += 10
    return SeriesSet(np.concatenate(rows), np.concatenate(targets), runs)


def test_training_uses_the_context_and_beats_the_per_slice_predictions():
    params = section({"sequence": SEQUENCE}, "sequence", SequenceParams)
    train, val = _toy_series(48, seed=0), _toy_series(16, seed=1)
    model, summary = fit_sequence(train, val, params, weighted_log_loss)
    cnn = weighted_log_loss(val.targets, _sigmoid(val.rows[:, -6:]))
    refined = weighted_log_loss(val.targets, predict_series(model, val.rows, val.runs))
    assert summary["epoch"] > 0 and summary["val_weighted_log_loss"] == pytest.approx(refined, rel=1e-5)
    assert refined < 0.8 * cnn, (refined, cnn)


SHAPE = 32
MODEL = {
    "arch": "efficientnetv2",
    "efficientnet": "efficientnetv2b0",
    "convnext": "convnext_atto",
    "weights": None,
    "dropout": 0.1,
    "fusion_units": 8,
    "online_augmentation": False,
    "combination": "product",
    "gate_threshold": 0.5,
    "context_slices": 1,
}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A single-backbone CNN (32 px, 2.5D with k = 1) in models/cnn and a sequence model, as the stages write them."""
    root = tmp_path_factory.mktemp("models")
    params = section({"model": MODEL}, "model", ModelParams)
    recipe = get_recipe("efficientnetv2")
    keras.utils.set_random_seed(0)
    network = recipe.build("model", params, (SHAPE, SHAPE, 3))
    network.save(root / "model.best.keras")
    card = model_card(
        arch="efficientnetv2",
        described=recipe.describe(params),
        networks={"model": "model.keras"},
        image_size=SHAPE,
        windows=[],
        weights=None,
        thresholds={label: 0.5 for label in LABELS},
        context_slices=1,
    )
    save_model_folder(root / "models/cnn", card, {"model": root / "model.best.keras"})
    feature_dim = network.get_layer("probabilities").input.shape[-1]
    sequence = _randomised(build_sequence_model(feature_dim, projection=4, units=4, layers_count=1), seed=5)
    (root / "models/sequence").mkdir()
    sequence.save(root / "models/sequence/sequence.keras")
    entry = {"dir": "sequence", "file": "sequence.keras", "thresholds": {label: 0.4 for label in LABELS}}
    (root / "models/model.json").write_text(json.dumps(folder_card(card, "cnn", entry).to_json()))
    return root / "models"


def _series_images(count: int, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, SHAPE, SHAPE, 3), dtype=np.uint8)
    series = ["ID_s1" if index % 3 else "ID_s2" for index in range(count)]
    return images, series, rng.permutation(count).astype(float), [f"ID_{index:04x}" for index in range(count)]


def test_a_model_folder_with_a_sequence_predicts_through_both_and_2p5d_inputs_are_composed(model_folder):
    loaded = load_models(model_folder)
    assert loaded.sequence is not None and loaded.context_slices == 1
    assert loaded.card.thresholds["any"] == 0.4 and loaded.card.cnn_thresholds["any"] == 0.5
    images, series, z, ids = _series_images(8)
    predicted = loaded.predict_slices(images, series, z, ids)
    # the CNN reads 2.5D images: green from the slice before along z, blue from the slice after (by hand)
    order = {name: sorted((pos, row) for row, (s, pos) in enumerate(zip(series, z)) if s == name) for name in set(series)}
    expected = images.copy()
    for ranked in order.values():
        rows = [row for _, row in ranked]
        for place, row in enumerate(rows):
            expected[row, ..., 1] = images[rows[max(place - 1, 0)], ..., 1]
            expected[row, ..., 2] = images[rows[min(place + 1, len(rows) - 1)], ..., 2]
    cnn = np.asarray(loaded.networks["model"](expected.astype(np.float32) / 255.0, training=False), np.float64)
    np.testing.assert_allclose(predicted.cnn, cnn, rtol=1e-4, atol=1e-6)
    # the final probabilities are the sequence model's over each series, in z order
    runs = series_runs(series, series_order(series, z, ids))
    np.testing.assert_allclose(
        predicted.final, predict_series(loaded.sequence, slice_inputs(predicted.features, cnn), runs), rtol=1e-4
    )
    assert np.abs(predicted.final - predicted.cnn).max() > 1e-4
    # the CNN folder alone predicts without context
    alone = load_models(model_folder / "cnn").predict_slices(images, series, z, ids)
    assert alone.features is None
    np.testing.assert_allclose(alone.final, predicted.cnn, rtol=1e-5)
    # test-time augmentation: the mean over the composed image and its mirror
    mirrored = np.asarray(loaded.networks["model"](expected[:, :, ::-1].astype(np.float32) / 255.0, training=False), np.float64)
    np.testing.assert_allclose(
        loaded.predict_slices(images, series, z, ids, tta=True).cnn, (cnn + mirrored) / 2, rtol=1e-4, atol=1e-6
    )


def test_a_card_cannot_send_the_loader_outside_its_folder(model_folder, tmp_path):
    card = json.loads((model_folder / "model.json").read_text())
    for key, value in (("cnn_dir", "../cnn"), ("cnn_dir", "/etc")):
        folder = tmp_path / key.replace("/", "_") / value.replace("/", "_")
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps({**card, key: value}))
        with pytest.raises(ValueError, match="cnn_dir: Value error, must be a plain subfolder name"):
            load_models(folder)
    bad = tmp_path / "sequence_file"
    bad.mkdir()
    (bad / "model.json").write_text(json.dumps({**card, "sequence": {**card["sequence"], "file": "../../x.keras"}}))
    with pytest.raises(ValueError, match=r"sequence.file: Value error, must be a plain .keras file name"):
        load_models(bad)


def _png_table(folder, images, series, z, ids) -> pd.DataFrame:
    folder.mkdir(exist_ok=True)
    for image, image_id in zip(images, ids):
        cv2.imwrite(str(folder / f"{image_id}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return pd.DataFrame(
        {"ID": ids, "SeriesInstanceUID": series, "position_z": z, "path": [str(folder / f"{i}.png") for i in ids]}
    )


def test_predicting_a_table_in_chunks_of_whole_series_equals_predicting_it_at_once(model_folder, tmp_path):
    loaded = load_models(model_folder)
    images, series, z, ids = _series_images(9, seed=1)
    frame = _png_table(tmp_path / "png", images, series, z, ids)
    chunks = list(series_chunks(frame, 2))
    assert sorted(np.concatenate(chunks).tolist()) == list(range(9)) and len(chunks) == 2  # each series whole
    whole = loaded.predict_slices(images, series, z, ids)
    chunked = predict_frame(loaded, frame, chunk_images=2)
    np.testing.assert_allclose(chunked.final, whole.final, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(chunked.cnn, whole.cnn, rtol=1e-4, atol=1e-6)


def test_the_feature_store_resumes_after_a_kill_and_starts_over_for_another_model(model_folder, tmp_path):
    loaded = load_models(model_folder)
    images, series, z, ids = _series_images(9, seed=2)
    frame = _png_table(tmp_path / "png", images, series, z, ids)
    store = FeatureStore(tmp_path / "store", "train")
    features, probabilities, speed = store.compute(loaded, frame, "fingerprint-1", chunk_images=2)
    assert speed["images"] == 9 and features.shape[0] == 9
    np.testing.assert_allclose(probabilities, loaded.predict_slices(images, series, z, ids).cnn, rtol=1e-4, atol=1e-6)
    # the window means of every image (the out-of-distribution check's intensities), by numpy on the images
    np.testing.assert_allclose(store.channel_means(), images.reshape(9, -1, 3).mean(axis=1) / 255.0, rtol=1e-12)
    # a kill after the first chunk: the state lists only it; the rerun computes the rest alone
    state = json.loads(store.state_path.read_text())
    store.state_path.write_text(json.dumps({**state, "chunks_done": [0]}))
    first = len(next(series_chunks(frame, 2)))
    again, _, speed = store.compute(loaded, frame, "fingerprint-1", chunk_images=2)
    assert speed["images"] == 9 - first
    np.testing.assert_allclose(again, features, rtol=1e-6)
    assert store.compute(loaded, frame, "fingerprint-1", chunk_images=2)[2]["images"] == 0
    assert store.compute(loaded, frame, "fingerprint-2", chunk_images=2)[2]["images"] == 9


def test_2p5d_training_batches_and_augmented_copies_are_composed_from_the_neighbours(tmp_path):
    images, series, z, ids = _series_images(5, seed=3)
    frame = _png_table(tmp_path / "png", images, ["ID_s"] * 5, z, ids)
    before = [ids[int(np.flatnonzero(z == max(z[row] - 1, 0))[0])] for row in range(5)]  # z is a permutation of 0..4
    after = [ids[int(np.flatnonzero(z == min(z[row] + 1, 4))[0])] for row in range(5)]
    dataset = make_dataset(
        frame["path"].tolist(),
        np.zeros((5, 6)),
        SHAPE,
        5,
        False,
        0,
        cache=False,
        neighbours=([str(tmp_path / "png" / f"{i}.png") for i in before], [str(tmp_path / "png" / f"{i}.png") for i in after]),
    )
    batch = next(iter(dataset))[0].numpy()
    by_id = dict(zip(ids, images))
    for row in range(5):
        expected = np.stack([images[row][..., 0], by_id[before[row]][..., 1], by_id[after[row]][..., 2]], axis=-1)
        np.testing.assert_allclose(batch[row] * 255.0, expected, atol=1e-3)
    # offline augmentation composes first and transforms the composed image as one (here: the identity)
    out = tmp_path / "augmented"
    out.mkdir()
    neighbours = dict(zip(ids, zip(before, after)))
    write_augmented([(ids[2], f"{ids[2]}_aug1")], tmp_path / "png", out, lambda image: {"image": image}, neighbours)
    written = cv2.cvtColor(cv2.imread(str(out / f"{ids[2]}_aug1.png")), cv2.COLOR_BGR2RGB)
    expected = np.stack([images[2][..., 0], by_id[before[2]][..., 1], by_id[after[2]][..., 2]], axis=-1)
    np.testing.assert_array_equal(written, expected)
