"""Stage `sequence`: slice context. The trained CNN (frozen) gives every slice of every train and val series its
pooled features and probabilities; a bidirectional GRU over each series in z order learns to correct them,
early-stopped on val. The same features (computed also when `sequence.enabled` is false) give the
out-of-distribution statistics of `ich predict` (ich.inference.ood): fitted on the train series, threshold on val.
Writes models/sequence/ (sequence.keras, ood.npz) and the model folder's card, models/model.json."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import pandas as pd

from dvclive import Live
from ich.core.files import prepare_output_dir, write_json
from ich.core.params import SequenceParams, load_params, section
from ich.core.runner import run_stage
from ich.data.context import series_order, series_runs
from ich.evaluation.metrics import tune_thresholds, weighted_log_loss
from ich.inference.features import FeatureStore, fingerprint_files
from ich.inference.loading import load_models
from ich.inference.ood import OOD_FILE, OodEntry, fit_ood, save_ood
from ich.models.card import MODEL_CARD, folder_card
from ich.models.document import card_document
from ich.models.sequence import SeriesSet, fit_sequence, predict_series, slice_inputs
from ich.training.datasets import label_matrix, load_table

SPLIT_DIR, PNG_DIR, MODELS, CNN_DIR, OUTPUT = "data/split", "data/png", "models", "cnn", "sequence"
AUGMENTED = "data/augmented.csv"
STORE, LIVE_DIR, METRICS = "checkpoints/sequence", "dvclive/sequence", "metrics/sequence.json"


def main() -> None:
    params = section(load_params(), "sequence", SequenceParams)
    cnn = load_models(f"{MODELS}/{CNN_DIR}")
    output = prepare_output_dir(f"{MODELS}/{OUTPUT}.partial")
    entry: dict[str, Any] | None = None
    metrics: dict[str, Any] = {"enabled": params.enabled}
    model_files = sorted(f"{MODELS}/{CNN_DIR}/{name}" for name in [MODEL_CARD, *cnn.card.files.values()])
    splits, rates, cnn_probabilities, ood_inputs = {}, [], {}, []
    frames = {}
    for name in ("train", "val"):
        frame = frames[name] = load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR)
        fingerprint = fingerprint_files([*model_files, *frame["path"]], extra=frame.to_csv(index=False))
        store = FeatureStore(STORE, name)
        features, probabilities, speed = store.compute(cnn, frame, fingerprint, params.batch_size)
        rates.append(speed)
        cnn_probabilities[name] = probabilities
        series = frame["SeriesInstanceUID"].astype(str).to_numpy()
        ood_inputs += [features, store.channel_means(), series]
        runs = series_runs(series, series_order(series, frame["position_z"].to_numpy(), frame["ID"].to_numpy()))
        splits[name] = SeriesSet(slice_inputs(features, probabilities), label_matrix(frame), runs)
    try:
        ood_stats, ood = fit_ood(*ood_inputs)
        save_ood(ood_stats, output / OOD_FILE)
        metrics["ood"] = {key: ood[key] for key in ("threshold", "val_false_alarm_rate", "train_series", "val_series")}
    except ValueError as error:  # too few series to measure a spread: the model folder goes without the check
        logging.getLogger("ich").warning("sequence: no out-of-distribution statistics: %s", error)
        ood, metrics["ood"] = None, None
    if params.enabled:
        with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
            network, fitted = fit_sequence(splits["train"], splits["val"], params, weighted_log_loss, live)
        network.save(output / "sequence.keras")
        val = splits["val"]
        thresholds = tune_thresholds(val.targets, predict_series(network, val.rows, val.runs))
        images, seconds = sum(rate["images"] for rate in rates), sum(rate["seconds"] for rate in rates)
        metrics.update(
            fitted,
            val_weighted_log_loss_cnn=weighted_log_loss(splits["val"].targets, cnn_probabilities["val"]),
            train_series=len(splits["train"].runs),
            val_series=len(splits["val"].runs),
            feature_dim=splits["train"].feature_dim,
            features_computed=images,
            features_images_per_s=round(images / seconds, 1) if images and seconds else None,
        )
        entry = {
            "dir": OUTPUT,
            "file": "sequence.keras",
            "inputs": "CNN pooled features + its six logits and their differences to the neighbouring slices",
            "feature_dim": splits["train"].feature_dim,
            **params.model_dump(),
            **fitted,
            "thresholds": thresholds,
        }
    else:  # the CNN's predictions are final; the stage's dvclive folder still exists, with no curve in it
        with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
            live.log_params({"enabled": False})
    write_json(metrics, output / "sequence.json")
    shutil.rmtree(f"{MODELS}/{OUTPUT}", ignore_errors=True)
    output.rename(f"{MODELS}/{OUTPUT}")  # the folder appears whole or not at all
    card = folder_card(cnn.card, CNN_DIR, entry).to_json()
    if ood:  # the folder card's `ood` entry (ich.inference.ood.OodEntry)
        card["ood"] = OodEntry(dir=OUTPUT, file=OOD_FILE, **ood).model_dump()
    # The card as a document (ich.models.document): intended use, training data, git revision, data hash.
    tables = [f"{SPLIT_DIR}/train.csv", AUGMENTED, f"{SPLIT_DIR}/val.csv"]
    augmented = pd.read_csv(AUGMENTED, dtype={"ID": str})
    card.update(card_document(frames["train"], augmented, frames["val"], cnn.card.image_size, tables))
    write_json(card, f"{MODELS}/{MODEL_CARD}")
    write_json(metrics, METRICS)
    logging.getLogger("ich").info("sequence: %s", metrics)


if __name__ == "__main__":
    run_stage(main)
