"""Stage `sequence`: slice context. The trained CNN (frozen) gives every slice of every train and val series its
pooled features and probabilities; a bidirectional GRU over each series in z order learns to correct them,
early-stopped on val. The same features (computed also when `sequence.enabled` is false) give the
out-of-distribution statistics of `ich predict` (ich.inference.ood): fitted on the train series, threshold on val.
Writes models/sequence/ (sequence.keras, ood.npz) and the model folder's card, models/model.json
(ich.inference.series_model)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import pandas as pd

from dvclive import Live
from ich.core.files import prepare_output_dir, write_json
from ich.core.images import load_table
from ich.core.params import SequenceParams, load_params, section
from ich.core.runner import run_stage
from ich.inference.loading import load_models
from ich.inference.ood import OOD_FILE
from ich.inference.series_model import fit_ood_statistics, fit_series_model, ood_metrics, series_card, split_features
from ich.models.card import MODEL_CARD

SPLIT_DIR, PNG_DIR, MODELS, CNN_DIR, OUTPUT = "data/split", "data/png", "models", "cnn", "sequence"
AUGMENTED = "data/augmented.csv"
STORE, LIVE_DIR, METRICS = "checkpoints/sequence", "dvclive/sequence", "metrics/sequence.json"


def main() -> None:
    params = section(load_params(), "sequence", SequenceParams)
    cnn = load_models(f"{MODELS}/{CNN_DIR}")
    output = prepare_output_dir(f"{MODELS}/{OUTPUT}.partial")
    model_files = sorted(f"{MODELS}/{CNN_DIR}/{name}" for name in [MODEL_CARD, *cnn.card.files.values()])
    train, val = (
        split_features(cnn, load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR), model_files, STORE, name, params.batch_size)
        for name in ("train", "val")
    )
    ood = fit_ood_statistics(train, val, output / OOD_FILE)
    metrics: dict[str, Any] = {"enabled": params.enabled, "ood": ood_metrics(ood)}
    entry = None
    if params.enabled:
        entry, fitted = fit_series_model(train, val, params, LIVE_DIR, output, OUTPUT)
        metrics.update(fitted)
    else:  # the CNN's predictions are final; the stage's dvclive folder still exists, with no curve in it
        with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
            live.log_params({"enabled": False})
    write_json(metrics, output / "sequence.json")
    shutil.rmtree(f"{MODELS}/{OUTPUT}", ignore_errors=True)
    output.rename(f"{MODELS}/{OUTPUT}")  # the folder appears whole or not at all
    splits = (train.frame, pd.read_csv(AUGMENTED, dtype={"ID": str}), val.frame)
    tables = [f"{SPLIT_DIR}/train.csv", AUGMENTED, f"{SPLIT_DIR}/val.csv"]
    write_json(series_card(cnn.card, CNN_DIR, entry, ood, OUTPUT, OOD_FILE, splits, tables), f"{MODELS}/{MODEL_CARD}")
    write_json(metrics, METRICS)
    logging.getLogger("ich").info("sequence: %s", metrics)


if __name__ == "__main__":
    run_stage(main)
