"""Stage `evaluate`: final predictions on the test split, metrics per label and overall, plots."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pandas as pd
from dvclive import Live

from ich.cli import run_stage
from ich.data import label_matrix, load_table, make_dataset
from ich.evaluation import evaluate_predictions, tune_thresholds
from ich.files import write_csv, write_json
from ich.inference import load_models, predict_probabilities
from ich.labels import LABELS
from ich.params import EvaluateParams, load_params, section

SPLIT_DIR = "data/split"
PNG_DIR = "data/png"
MODEL_DIR = "models"
PREDICTIONS = "data/predictions/test.csv"
METRICS = "metrics/evaluate.json"
LIVE_DIR = "dvclive/evaluate"

logger = logging.getLogger("ich")
_SHORT = {"any": "any", "epidural": "EDH", "intraparenchymal": "IPH", "intraventricular": "IVH", "subarachnoid": "SAH", "subdural": "SDH"}


def montage(frame: pd.DataFrame, probabilities: np.ndarray, threshold: float, count: int, seed: int) -> np.ndarray:
    """A grid of test slices, each captioned with its true (T) and predicted (P) labels."""
    rng = np.random.default_rng(seed)
    positives = np.flatnonzero(frame["any"].to_numpy() == 1)
    negatives = np.flatnonzero(frame["any"].to_numpy() == 0)
    half = count // 2
    chosen = np.concatenate([
        rng.choice(positives, size=min(len(positives), count - min(half, len(negatives))), replace=False),
        rng.choice(negatives, size=min(half, len(negatives)), replace=False),
    ]).astype(int)
    tiles = []
    for index in chosen:
        tile = cv2.resize(cv2.imread(frame["path"].iloc[index], cv2.IMREAD_COLOR), (192, 192), interpolation=cv2.INTER_NEAREST)
        truth = [_SHORT[label] for label in LABELS if frame[label].iloc[index] == 1] or ["none"]
        predicted = [f"{_SHORT[label]} {probabilities[index, k]:.2f}" for k, label in enumerate(LABELS) if probabilities[index, k] >= threshold] or ["none"]
        cv2.putText(tile, "T: " + " ".join(truth), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(tile, "P: " + " ".join(predicted)[:40], (4, 186), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    columns = 4
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    return cv2.cvtColor(grid, cv2.COLOR_BGR2RGB)


def main() -> None:
    params = section(load_params(), "evaluate", EvaluateParams)
    loaded = load_models(MODEL_DIR)
    size = int(loaded.card["image_size"])
    frames = {name: load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR) for name in ("val", "test")}
    probabilities = {}
    for name, frame in frames.items():
        dataset = make_dataset(frame["path"].tolist(), label_matrix(frame), size, 32, False, 0, cache=False)
        probabilities[name] = predict_probabilities(loaded, dataset, params.combination, params.gate_threshold)
    truth = {name: label_matrix(frame) for name, frame in frames.items()}
    tuned = tune_thresholds(truth["val"], probabilities["val"], default=params.threshold)
    metrics = evaluate_predictions(truth["test"], probabilities["test"], params.threshold, tuned)
    metrics["combination"] = params.combination
    write_json(metrics, METRICS)
    predictions = pd.DataFrame(probabilities["test"], columns=list(LABELS))
    predictions.insert(0, "ID", frames["test"]["ID"].to_numpy())
    write_csv(predictions, PREDICTIONS)

    test, p_test, y_test = frames["test"], probabilities["test"], truth["test"].astype(int)
    with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
        for index, label in enumerate(LABELS):
            if y_test[:, index].min() != y_test[:, index].max():
                live.log_sklearn_plot("roc", y_test[:, index], p_test[:, index], name=f"roc/{label}")
                live.log_sklearn_plot("precision_recall", y_test[:, index], p_test[:, index], name=f"precision_recall/{label}")
            predicted = (p_test[:, index] >= params.threshold).astype(int)
            live.log_sklearn_plot("confusion_matrix", y_test[:, index].tolist(), predicted.tolist(), name=f"confusion/{label}")
        if params.montage_images > 0:
            live.log_image("montage.png", montage(test, p_test, params.threshold, params.montage_images, seed=0))
    summary = ", ".join(f"{label} {metrics[label]['auc']:.3f}" if metrics[label]["auc"] is not None else f"{label} n/a" for label in LABELS)
    logger.info("evaluate: AUC %s; mean subtype AUC %s; weighted log loss %.4f", summary, metrics["mean_subtype_auc"], metrics["weighted_log_loss"])


if __name__ == "__main__":
    run_stage(main)
