"""Evaluation: cascade combination, per-label metrics, the competition's weighted log loss, thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ich.labels import ANY, LABELS, SUBTYPES

__all__ = [
    "COMBINATIONS",
    "LOG_LOSS_WEIGHTS",
    "LOG_LOSS_EPS",
    "combine_cascade",
    "weighted_log_loss",
    "safe_auc",
    "label_metrics",
    "tune_thresholds",
    "evaluate_predictions",
]

COMBINATIONS: tuple[str, ...] = ("product", "gate")
#: RSNA 2019 competition weights: ``any`` counts twice, each subtype once (sum 7).
LOG_LOSS_WEIGHTS: dict[str, float] = {ANY: 2.0, **{subtype: 1.0 for subtype in SUBTYPES}}


def combine_cascade(
    p_any: np.ndarray, p_subtype_given_bleed: np.ndarray, method: str = "product", gate_threshold: float = 0.5
) -> np.ndarray:
    """Final six probabilities ``(N, 6)`` (``any`` first) from the cascade's two stages.

    - ``product``: ``P(subtype) = P(any) * P(subtype | hemorrhage)``, the law of total probability
      (a subtype implies a hemorrhage).
    - ``gate``: stage 2 speaks only where stage 1 is confident: ``P(subtype | hemorrhage)`` where
      ``P(any) >= gate_threshold``, else the product (which stays small).

    Args:
        p_any: ``(N,)`` or ``(N, 1)`` stage-1 probabilities.
        p_subtype_given_bleed: ``(N, 5)`` stage-2 probabilities in :data:`SUBTYPES` order.
    """
    p_any = np.asarray(p_any, dtype=np.float64).reshape(-1, 1)
    conditional = np.asarray(p_subtype_given_bleed, dtype=np.float64)
    if conditional.shape != (len(p_any), len(SUBTYPES)):
        raise ValueError(f"Expected stage-2 probabilities of shape ({len(p_any)}, {len(SUBTYPES)}). Received: {conditional.shape}")
    if method == "product":
        subtypes = p_any * conditional
    elif method == "gate":
        subtypes = np.where(p_any >= gate_threshold, conditional, p_any * conditional)
    else:
        raise ValueError(f"`evaluate.combination` must be one of {', '.join(COMBINATIONS)}. Received: {method!r}")
    return np.concatenate([p_any, subtypes], axis=1)


#: Predictions are clipped to ``[eps, 1 - eps]`` before the log, as the RSNA 2019 Kaggle metric did
#: (scikit-learn's ``log_loss`` default at the time).
LOG_LOSS_EPS = 1e-15


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


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str] = LABELS, default: float = 0.5) -> dict[str, float]:
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


def evaluate_predictions(
    y_true: np.ndarray, y_prob: np.ndarray, threshold: float, tuned: dict[str, float] | None = None
) -> dict[str, object]:
    """The ``metrics/evaluate.json`` object: one entry per label plus overall figures.

    Per label: ``auc`` (None if undefined), ``accuracy``, ``precision``, ``recall``, ``f1`` at
    ``threshold``, and the same at the validation-tuned threshold under ``tuned``. Overall:
    ``weighted_log_loss``, ``mean_subtype_auc`` (mean of the defined subtype AUCs), ``macro`` averages.
    """
    result: dict[str, object] = {}
    for index, label in enumerate(LABELS):
        entry = label_metrics(y_true[:, index], y_prob[:, index], threshold)
        if tuned is not None:
            at_tuned = label_metrics(y_true[:, index], y_prob[:, index], tuned[label])
            entry["tuned"] = {key: at_tuned[key] for key in ("threshold", "accuracy", "precision", "recall", "f1")}
        result[label] = entry
    subtype_aucs = [result[label]["auc"] for label in SUBTYPES if result[label]["auc"] is not None]  # type: ignore[index]
    aucs = [result[label]["auc"] for label in LABELS if result[label]["auc"] is not None]  # type: ignore[index]
    result["weighted_log_loss"] = weighted_log_loss(y_true, y_prob)
    result["mean_subtype_auc"] = float(np.mean(subtype_aucs)) if subtype_aucs else None
    result["macro"] = {
        "auc": float(np.mean(aucs)) if aucs else None,
        **{key: float(np.mean([result[label][key] for label in LABELS])) for key in ("accuracy", "precision", "recall", "f1")},  # type: ignore[index]
    }
    result["images"] = int(len(y_true))
    for value in (result["weighted_log_loss"], result["mean_subtype_auc"]):
        if value is not None and not math.isfinite(value):  # type: ignore[arg-type]
            raise ValueError("A metric came out non-finite; check the predictions for NaN.")
    return result
