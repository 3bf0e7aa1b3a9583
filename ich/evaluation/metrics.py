"""Evaluation: per-label metrics, the competition's weighted log loss, tuned thresholds, series-level predictions and
the summary the evaluate stage writes (intervals from :mod:`ich.evaluation.bootstrap`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple, cast

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ich.core.labels import LABELS, LOG_LOSS_EPS, LOG_LOSS_WEIGHTS, SUBTYPES
from ich.evaluation.bootstrap import CI_LEVEL, MIN_VALID_DRAWS, bootstrap_intervals

__all__ = [
    "weighted_log_loss",
    "safe_auc",
    "label_metrics",
    "tune_thresholds",
    "mean_subtype_auc",
    "SeriesPredictions",
    "series_predictions",
    "evaluate_predictions",
]


def weighted_log_loss(y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str] = LABELS, eps: float = LOG_LOSS_EPS) -> float:
    """The competition metric: per-label mean log loss, weighted any=2 and each subtype=1, divided by 7.

    Predictions are clipped to ``[eps, 1 - eps]`` first (``1e-15`` as on Kaggle), so a certain mistake
    costs ``-ln(1e-15) = 34.54`` instead of infinity.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_prob = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    per_label = -(y_true * np.log(y_prob) + (1 - y_true) * np.log(1 - y_prob)).mean(axis=0)
    weights = np.array([LOG_LOSS_WEIGHTS[label] for label in labels])
    return float((per_label * weights).sum() / weights.sum())


def safe_auc(y_true: np.ndarray, y_prob: np.ndarray) -> float | None:
    """ROC AUC, or None when it is undefined (only one class present)."""
    y_true = np.asarray(y_true)
    if y_true.min() == y_true.max():
        return None
    return float(roc_auc_score(y_true, y_prob))


def label_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """AUC, accuracy, precision, recall, F1 of one label at ``threshold`` (undefined ratios are 0)."""
    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(y_prob) >= threshold).astype(int)
    return {
        "auc": safe_auc(y_true, y_prob),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "precision": float(precision_score(y_true, predicted, zero_division=0)),
        "recall": float(recall_score(y_true, predicted, zero_division=0)),
        "f1": float(f1_score(y_true, predicted, zero_division=0)),
        "positives": int(y_true.sum()),
        "threshold": float(threshold),
    }


def tune_thresholds(
    y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str] = LABELS, default: float = 0.5
) -> dict[str, float]:
    """Per label, the threshold with the best F1 on these (validation) predictions; ``default`` where
    a label has no positive."""
    thresholds = {}
    for index, label in enumerate(labels):
        truth = np.asarray(y_true)[:, index]
        if truth.max() == 0 or truth.min() == 1:
            thresholds[label] = default
            continue
        precision, recall, candidates = precision_recall_curve(truth, np.asarray(y_prob)[:, index])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        thresholds[label] = float(candidates[int(np.argmax(f1[:-1]))])
    return thresholds


def mean_subtype_auc(aucs: Mapping[str, float | None]) -> float | None:
    """The mean AUC of the five subtypes, or None unless all five are defined.

    A mean over whichever subtypes happen to have both classes would average different labels in
    different runs (a test split without epidural would drop the hardest label), so runs would not be
    comparable; the count of defined subtype AUCs is reported beside it (``subtype_aucs_defined``).
    """
    values = [aucs[subtype] for subtype in SUBTYPES]
    if any(value is None for value in values):
        return None
    return float(np.mean(cast("list[float]", values)))  # no None left: checked above


class SeriesPredictions(NamedTuple):
    """Per-series truth and scores: ``ids (S,)`` sorted, ``y_true``/``y_prob`` ``(S, L)``, and the patient
    of each series ``groups (S,)`` (None when no patients were given)."""

    ids: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray
    groups: np.ndarray | None


def series_predictions(
    y_true: np.ndarray, y_prob: np.ndarray, series: np.ndarray, groups: np.ndarray | None = None
) -> SeriesPredictions:
    """Slices to series: a series is positive for a label if any of its slices is, and its score for
    the label is the highest score of its slices.

    Args:
        y_true: ``(N, L)`` 0/1 per slice.
        y_prob: ``(N, L)`` per slice.
        series: ``(N,)`` series key (``SeriesInstanceUID``) of each slice.
        groups: optional ``(N,)`` patient key of each slice; every series must belong to one patient.

    Raises:
        ValueError: a key array of the wrong length, or a series spread over two patients.
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    series = np.asarray(series)
    if series.shape != (len(y_true),):
        raise ValueError(f"`series` must hold one series key per image, shape ({len(y_true)},). Received: {series.shape}")
    ids, codes = np.unique(series, return_inverse=True)
    codes = codes.reshape(-1)
    truth = np.zeros((len(ids), y_true.shape[1]), dtype=y_true.dtype)
    np.maximum.at(truth, codes, y_true)
    prob = np.full((len(ids), y_prob.shape[1]), -np.inf)
    np.maximum.at(prob, codes, y_prob)
    series_groups = None
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (len(y_true),):
            raise ValueError(f"`groups` must hold one patient key per image, shape ({len(y_true)},). Received: {groups.shape}")
        first = np.zeros(len(ids), dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes))[::-1]
        series_groups = groups[first]
        spread = series_groups[codes] != groups
        if spread.any():
            raise ValueError(
                f"Series {str(series[np.flatnonzero(spread)[0]])!r} belongs to more than one patient; every series must have "
                "one PatientID. Check the index's PatientID/SeriesInstanceUID columns."
            )
    return SeriesPredictions(ids, truth, prob, series_groups)


def _check_predictions(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    expected = (len(y_true), len(LABELS))
    if y_true.ndim != 2 or y_true.shape != expected or y_prob.shape != expected or len(y_true) == 0:
        raise ValueError(
            f"Expected truth and probabilities of shape (N, {len(LABELS)}) with N >= 1, columns in {', '.join(LABELS)} order. "
            f"Received: {y_true.shape} and {y_prob.shape}"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("Labels must be 0 or 1; check the split CSV's label columns.")
    if not (np.isfinite(y_prob).all() and (y_prob >= 0).all() and (y_prob <= 1).all()):
        raise ValueError("Probabilities must be finite and in [0, 1]; check the predictions for NaN or logits.")
    return y_true.astype(int), y_prob


def _check_finite(value: object, key: str) -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for item in value:
            _check_finite(item, key)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"Metric {key} came out non-finite ({value}); check the predictions for NaN.")


def _summary(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float,
    tuned: Mapping[str, float] | None,
    groups: np.ndarray | None,
    draws: int,
    seed: int,
) -> dict[str, object]:
    """Per-label entries and the overall figures of one set of rows (images or series)."""
    result: dict[str, object] = {}
    intervals = bootstrap_intervals(y_true, y_prob, groups, draws, seed) if groups is not None else None
    for index, label in enumerate(LABELS):
        entry = cast("dict[str, object]", label_metrics(y_true[:, index], y_prob[:, index], threshold))
        if intervals is not None:
            entry["auc_ci95"] = intervals["auc_ci95"][label]  # type: ignore[index]
        if tuned is not None:
            at_tuned = label_metrics(y_true[:, index], y_prob[:, index], tuned[label])
            entry["tuned"] = {key: at_tuned[key] for key in ("threshold", "accuracy", "precision", "recall", "f1")}
        result[label] = entry
    aucs = {label: result[label]["auc"] for label in LABELS}  # type: ignore[index]
    result["weighted_log_loss"] = weighted_log_loss(y_true, y_prob)
    if intervals is not None:
        result["weighted_log_loss_ci95"] = intervals["weighted_log_loss_ci95"]
    result["mean_subtype_auc"] = mean_subtype_auc(aucs)
    result["subtype_aucs_defined"] = sum(aucs[subtype] is not None for subtype in SUBTYPES)
    result["macro"] = {
        "auc": None if any(value is None for value in aucs.values()) else float(np.mean(list(aucs.values()))),
        **{key: float(np.mean([result[label][key] for label in LABELS])) for key in ("accuracy", "precision", "recall", "f1")},  # type: ignore[index]
    }
    result["prevalence"] = {label: float(y_true[:, index].mean()) for index, label in enumerate(LABELS)}
    return result


def evaluate_predictions(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    threshold: float,
    tuned: Mapping[str, float] | None = None,
    *,
    groups: np.ndarray | None = None,
    series: np.ndarray | None = None,
    series_tuned: Mapping[str, float] | None = None,
    draws: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """The ``metrics/evaluate.json`` object: one entry per label plus overall figures.

    Per label: ``auc`` (None if undefined), ``accuracy``, ``precision``, ``recall``, ``f1`` at
    ``threshold``, ``positives``, ``threshold``, and the same at the validation-tuned threshold under
    ``tuned``. Overall: ``weighted_log_loss`` (the competition metric), ``mean_subtype_auc`` (None
    unless all five subtype AUCs are defined, see :func:`mean_subtype_auc`), ``subtype_aucs_defined``,
    ``macro`` means over the six labels (its ``auc`` None unless all six are defined), ``prevalence``
    per label and ``images``.

    With ``groups`` (PatientID per image): per label ``auc_ci95``, top-level ``weighted_log_loss_ci95``
    (patient bootstrap, :func:`bootstrap_intervals`, ``draws``/``seed``), ``patients`` and a ``bootstrap``
    record of the settings. With ``series`` (SeriesInstanceUID per image): ``series`` and a
    ``series_level`` block with the same schema over series (:func:`series_predictions`), at
    ``threshold`` and, under ``tuned``, at ``series_tuned`` (thresholds tuned on validation *series*;
    slice thresholds are not reused, as a series' maximum runs higher than its slices).

    Raises:
        ValueError: inputs of the wrong shape or range, or a metric that came out non-finite.
    """
    y_true, y_prob = _check_predictions(y_true, y_prob)
    result = _summary(y_true, y_prob, threshold, tuned, groups, draws, seed)
    result["images"] = int(len(y_true))
    if groups is not None:
        result["patients"] = int(len(np.unique(np.asarray(groups))))
        result["bootstrap"] = {
            "unit": "patient",
            "draws": int(draws),
            "seed": int(seed),
            "level": CI_LEVEL,
            "min_valid_draws": MIN_VALID_DRAWS,
        }
    if series is not None:
        by_series = series_predictions(y_true, y_prob, series, groups)
        result["series"] = int(len(by_series.ids))
        series_level = _summary(by_series.y_true, by_series.y_prob, threshold, series_tuned, by_series.groups, draws, seed)
        series_level["series"] = int(len(by_series.ids))
        result["series_level"] = series_level
    _check_finite(result, "")
    return result
