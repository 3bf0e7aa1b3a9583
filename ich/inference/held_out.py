"""The evaluate stage's computation: the model folder's predictions on the validation and test splits at natural
prevalence, whole series at a time (the CNN, then the sequence model when there is one); their metrics per label and
per series with patient-bootstrap intervals (:func:`ich.evaluation.holdout.score_test`), for the final predictions
and for each model; and the offline report and dvclive plots of the test split."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from dvclive import Live
from ich.core.labels import LABELS, label_matrix
from ich.core.params import EvaluateParams
from ich.evaluation.holdout import score_test
from ich.inference.features import predict_frame
from ich.inference.loading import LoadedModel, SlicePredictions
from ich.reports.evaluation_page import evaluation_charts, write_report
from ich.reports.plots import log_label_plots, montage

__all__ = ["predict_splits", "prediction_table", "score_splits", "report_test"]


def predict_splits(model: LoadedModel, frames: Mapping[str, pd.DataFrame]) -> dict[str, SlicePredictions]:
    """The model's predictions on each split table (:func:`ich.core.images.load_table`), rows in table order."""
    return {name: predict_frame(model, frame) for name, frame in frames.items()}


def prediction_table(frame: pd.DataFrame, probabilities: np.ndarray) -> pd.DataFrame:
    """``ID`` and one probability column per label (:data:`ich.core.labels.LABELS`), in the table's order."""
    return pd.DataFrame(probabilities, columns=list(LABELS)).assign(ID=frame["ID"].to_numpy())[["ID", *LABELS]]


def score_splits(
    model: LoadedModel, frames: Mapping[str, pd.DataFrame], predicted: Mapping[str, SlicePredictions], params: EvaluateParams
) -> dict[str, Any]:
    """The test metrics of the final predictions (and, with a sequence model, of each model side by side), with
    thresholds tuned on val and intervals from patient-bootstrap draws; ``combination`` records the cascade's."""
    val, test = frames["val"], frames["test"]
    has_cnn = model.sequence is not None
    metrics = score_test(
        truth={name: label_matrix(frame) for name, frame in frames.items()},
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
    return metrics


def report_test(
    metrics: Mapping[str, Any],
    test: pd.DataFrame,
    probabilities: np.ndarray,
    params: EvaluateParams,
    *,
    report_dir: str | os.PathLike,
    curves: str | os.PathLike,
    live_dir: str | os.PathLike,
) -> None:
    """The offline report in ``report_dir`` (training curves from dvclive's TSVs in ``curves``, ROC, precision-recall,
    calibration, the metrics) and, in ``live_dir``, dvclive's per-label plots and a montage of test slices."""
    truth = label_matrix(test)
    charts = evaluation_charts(curves, truth, probabilities)
    title = f"ICH evaluation: test split, {len(test)} slices of {test['PatientID'].nunique()} patients"
    write_report(report_dir, charts, title, metrics)
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        log_label_plots(live, truth, probabilities, params.threshold)
        if params.montage_images > 0:
            live.log_image("montage.png", montage(test, probabilities, params.threshold, params.montage_images, seed=0))
