"""Stage `evaluate`: predictions on val and test at natural prevalence; metrics per label, per series, with
patient-bootstrap confidence intervals; plots."""

from __future__ import annotations

import logging

import pandas as pd
from dvclive import Live

from ich.data import label_matrix, load_table, make_dataset
from ich.evaluation import evaluate_predictions, series_predictions, tune_thresholds
from ich.files import write_csv, write_json
from ich.inference import load_models
from ich.labels import LABELS
from ich.params import EvaluateParams, load_params, section
from ich.plots import log_label_plots, montage
from ich.report import evaluation_charts, write_report
from ich.runner import run_stage

SPLIT_DIR, PNG_DIR, MODEL_DIR, CURVES, REPORT_DIR = "data/split", "data/png", "models", "dvclive/train/plots/metrics", "plots"
PREDICTIONS, METRICS, LIVE_DIR = "data/predictions/{}.csv", "metrics/evaluate.json", "dvclive/evaluate"


def main() -> None:
    params = section(load_params(), "evaluate", EvaluateParams)
    model = load_models(MODEL_DIR)
    frames = {name: load_table(f"{SPLIT_DIR}/{name}.csv", PNG_DIR) for name in ("val", "test")}
    truth, probabilities = {}, {}
    for name, frame in frames.items():
        truth[name] = label_matrix(frame)
        probabilities[name] = model.predict(make_dataset(frame["path"].tolist(), truth[name], model.image_size, 32, False, 0, cache=False))
        write_csv(pd.DataFrame(probabilities[name], columns=list(LABELS)).assign(ID=frame["ID"].to_numpy())[["ID", *LABELS]], PREDICTIONS.format(name))
    # Slice thresholds were tuned once, on val, when training (the model card's); series thresholds here, on val.
    val_series = series_predictions(truth["val"], probabilities["val"], frames["val"]["SeriesInstanceUID"].to_numpy())
    test = frames["test"]
    metrics = evaluate_predictions(
        truth["test"], probabilities["test"], params.threshold, model.card["thresholds"],
        groups=test["PatientID"].to_numpy(), series=test["SeriesInstanceUID"].to_numpy(),
        series_tuned=tune_thresholds(val_series.y_true, val_series.y_prob, default=params.threshold),
        draws=params.bootstrap_draws, seed=params.seed,
    )
    metrics["combination"] = model.card["combination"]
    write_json(metrics, METRICS)
    charts = evaluation_charts(CURVES, truth["test"], probabilities["test"])
    write_report(REPORT_DIR, charts, f"ICH evaluation: test split, {len(test)} slices of {test['PatientID'].nunique()} patients", metrics)
    with Live(LIVE_DIR, dvcyaml=False, save_dvc_exp=False) as live:
        log_label_plots(live, truth["test"], probabilities["test"], params.threshold)
        if params.montage_images > 0:
            live.log_image("montage.png", montage(test, probabilities["test"], params.threshold, params.montage_images, seed=0))
    summary = ", ".join(
        f"{label} {metrics[label]['auc']:.3f} {metrics[label].get('auc_ci95')}" if metrics[label]["auc"] is not None else f"{label} n/a"
        for label in LABELS
    )
    logging.getLogger("ich").info(
        "evaluate: AUC %s; mean subtype AUC %s; weighted log loss %.4f %s", summary, metrics["mean_subtype_auc"],
        metrics["weighted_log_loss"], metrics.get("weighted_log_loss_ci95"),
    )


if __name__ == "__main__":
    run_stage(main)
