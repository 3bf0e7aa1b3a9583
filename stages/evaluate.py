"""Stage `evaluate`: final predictions on the test split, metrics per label and overall, plots."""

from __future__ import annotations

import logging

import pandas as pd

from dvclive import Live
from ich.data import label_matrix, load_table, make_dataset
from ich.evaluation import evaluate_predictions, tune_thresholds
from ich.files import write_csv, write_json
from ich.inference import load_models
from ich.labels import LABELS
from ich.params import EvaluateParams, load_params, section
from ich.plots import log_label_plots, montage
from ich.runner import run_stage

SPLIT_DIR, PNG_DIR, MODEL_DIR = "data/split", "data/png", "models"
PREDICTIONS, METRICS, LIVE_DIR = "data/predictions/test.csv", "metrics/evaluate.json", "dvclive/evaluate"


def main() -> None:
    params = section(load_params(), "evaluate", EvaluateParams)
    model = load_models(MODEL_DIR)
    frames = {name: load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR) for name in ("val", "test")}
    truth, probabilities = {}, {}
    for name, frame in frames.items():
        truth[name] = label_matrix(frame)
        images = make_dataset(frame["path"].tolist(), truth[name], model.image_size, 32, False, 0, cache=False)
        probabilities[name] = model.predict(images, params.combination, params.gate_threshold)
    tuned = tune_thresholds(truth["val"], probabilities["val"], default=params.threshold)
    metrics = evaluate_predictions(truth["test"], probabilities["test"], params.threshold, tuned)
    metrics["combination"] = params.combination
    write_json(metrics, METRICS)
    predictions = pd.DataFrame(probabilities["test"], columns=list(LABELS))
    predictions.insert(0, "ID", frames["test"]["ID"].to_numpy())
    write_csv(predictions, PREDICTIONS)

    with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
        log_label_plots(live, truth["test"], probabilities["test"], params.threshold)
        if params.montage_images > 0:
            live.log_image("montage.png", montage(frames["test"], probabilities["test"], params.threshold, params.montage_images, seed=0))
    summary = ", ".join(f"{label} {metrics[label]['auc']:.3f}" if metrics[label]["auc"] is not None else f"{label} n/a" for label in LABELS)
    logging.getLogger("ich").info(
        "evaluate: AUC %s; mean subtype AUC %s; weighted log loss %.4f", summary, metrics["mean_subtype_auc"], metrics["weighted_log_loss"]
    )


if __name__ == "__main__":
    run_stage(main)
