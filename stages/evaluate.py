"""Stage `evaluate`: predictions on val and test at natural prevalence, whole series at a time (the CNN, then the
sequence model when there is one); metrics per label, per series, with patient-bootstrap confidence intervals,
for the final predictions and, side by side, for each model; plots (ich.inference.held_out)."""

from __future__ import annotations

import logging

from ich.core.files import write_csv, write_json
from ich.core.images import load_table
from ich.core.params import EvaluateParams, load_params, section
from ich.core.runner import run_stage
from ich.evaluation.comparison import metrics_summary
from ich.evaluation.headline import headline
from ich.inference.held_out import predict_splits, prediction_table, report_test, score_splits
from ich.inference.loading import load_models
from ich.models.document import EVALUATION_FILE, evaluation_summary

SPLIT_DIR, PNG_DIR, MODEL_DIR, CURVES, REPORT_DIR = "data/split", "data/png", "models", "dvclive/train/plots/metrics", "plots"
PREDICTIONS, LIVE_DIR = "data/predictions/{}.csv", "dvclive/evaluate"
METRICS, DETAIL = "metrics/evaluate.json", "metrics/evaluate_detail.json"  # headline: a DVC metric; detail: the rest


def main() -> None:
    params = section(load_params(), "evaluate", EvaluateParams)
    model = load_models(MODEL_DIR)
    frames = {name: load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR) for name in ("val", "test")}
    predicted = predict_splits(model, frames)
    for name, frame in frames.items():
        write_csv(prediction_table(frame, predicted[name].final), PREDICTIONS.format(name))
    metrics = score_splits(model, frames, predicted, params)
    write_json(metrics, DETAIL)
    summary = headline(metrics)
    write_json(summary, METRICS)
    # The model folder carries its headline test results (ich.models.document), read by `ich predict`.
    write_json(evaluation_summary(summary, frames["test"]), f"{MODEL_DIR}/{EVALUATION_FILE}")
    report_test(metrics, frames["test"], predicted["test"].final, params, report_dir=REPORT_DIR, curves=CURVES, live_dir=LIVE_DIR)
    for name, result in metrics.get("by_model", {"final": metrics}).items():
        logging.getLogger("ich").info("evaluate (%s): %s", name, metrics_summary(result))


if __name__ == "__main__":
    run_stage(main)
