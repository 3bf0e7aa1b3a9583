"""Stage `evaluate`: predictions on val and test at natural prevalence, whole series at a time (the CNN, then the
sequence model when there is one); metrics per label, per series, with patient-bootstrap confidence intervals,
for the final predictions and, side by side, for each model; plots."""

from __future__ import annotations

import logging

import pandas as pd

from dvclive import Live
from ich.core.files import write_csv, write_json
from ich.core.labels import LABELS
from ich.core.params import EvaluateParams, load_params, section
from ich.core.runner import run_stage
from ich.evaluation.comparison import metrics_summary
from ich.evaluation.headline import headline
from ich.evaluation.holdout import score_test
from ich.inference.features import predict_frame
from ich.inference.loading import load_models
from ich.models.document import EVALUATION_FILE, evaluation_summary
from ich.reports.evaluation_page import evaluation_charts, write_report
from ich.reports.plots import log_label_plots, montage
from ich.training.datasets import label_matrix, load_table

SPLIT_DIR, PNG_DIR, MODEL_DIR, CURVES, REPORT_DIR = "data/split", "data/png", "models", "dvclive/train/plots/metrics", "plots"
PREDICTIONS, LIVE_DIR = "data/predictions/{}.csv", "dvclive/evaluate"
METRICS, DETAIL = "metrics/evaluate.json", "metrics/evaluate_detail.json"  # headline: a DVC metric; detail: the rest


def main() -> None:
    params = section(load_params(), "evaluate", EvaluateParams)
    model = load_models(MODEL_DIR)
    frames = {name: load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR) for name in ("val", "test")}
    truth = {name: label_matrix(frame) for name, frame in frames.items()}
    predicted = {name: predict_frame(model, frame) for name, frame in frames.items()}
    for name, frame in frames.items():
        write_csv(
            pd.DataFrame(predicted[name].final, columns=list(LABELS)).assign(ID=frame["ID"].to_numpy())[["ID", *LABELS]],
            PREDICTIONS.format(name),
        )
    val, test = frames["val"], frames["test"]
    has_cnn = model.sequence is not None
    metrics = score_test(
        truth=truth,
        final={name: result.final for name, result in predicted.items()},
        thresholds=model.card.thresholds,
        cnn={name: result.cnn for name, result in predicted.items()} if has_cnn else None,
        cnn_thresholds=model.card.cnn_thresholds,
        val_series=val["SeriesInstanceUID"].to_numpy(),
        test_groups=test["PatientID"].to_numpy(),
        test_series=test["SeriesInstanceUID"].to_numpy(),
        threshold=params.threshold,
        draws=params.bootstrap_draws,
        seed=params.seed,
    )
    metrics["combination"] = model.card.combination
    write_json(metrics, DETAIL)
    summary = headline(metrics)
    write_json(summary, METRICS)
    # The model folder carries its headline test results (ich.models.document), read by `ich predict`.
    write_json(evaluation_summary(summary, test), f"{MODEL_DIR}/{EVALUATION_FILE}")
    probabilities = predicted["test"].final
    charts = evaluation_charts(CURVES, truth["test"], probabilities)
    write_report(
        REPORT_DIR, charts, f"ICH evaluation: test split, {len(test)} slices of {test['PatientID'].nunique()} patients", metrics
    )
    with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
        log_label_plots(live, truth["test"], probabilities, params.threshold)
        if params.montage_images > 0:
            live.log_image("montage.png", montage(test, probabilities, params.threshold, params.montage_images, seed=0))
    for name, result in metrics.get("by_model", {"final": metrics}).items():
        logging.getLogger("ich").info("evaluate (%s): %s", name, metrics_summary(result))


if __name__ == "__main__":
    run_stage(main)
