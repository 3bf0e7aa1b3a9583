"""Evaluation: cascade combination, per-label metrics, the competition's weighted log loss, thresholds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ich.core.labels import ANY, LABELS, SUBTYPES

__all__ = [
    "COMBINATIONS",
    "LOG_LOSS_WEIGHTS",
    "LOG_LOSS_EPS",
    "combine_cascade",
    "weighted_log_loss",
    "safe_auc",
    "label_metrics",
    "tune_thresholds",
    "CI_LEVEL",
    "MIN_VALID_DRAWS",
    "bootstrap_counts",
    "weighted_auc",
    "bootstrap_draws",
    "percentile_interval",
    "bootstrap_intervals",
    "mean_subtype_auc",
    "SeriesPredictions",
    "series_predictions",
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


#: Percentile bootstrap intervals are 95 % intervals: the 2.5th and 97.5th percentiles of the draws.
CI_LEVEL = 0.95
#: An interval needs at least this many draws in which its statistic is defined; below, it is None.
MIN_VALID_DRAWS = 100
# Draws are processed in blocks of about this many (draw, slice) cells to bound memory (~8 MB a block).
_BLOCK_CELLS = 1_000_000


def bootstrap_counts(num_patients: int, draws: int, seed: int) -> np.ndarray:
    """How often each patient is drawn in each bootstrap resample, ``(draws, num_patients)`` int64.

    Each draw picks ``num_patients`` patients uniformly with replacement:
    ``np.random.default_rng(seed).integers(0, num_patients, size=(draws, num_patients))``, counted per row.
    """
    if num_patients < 1 or draws < 1:
        raise ValueError(f"A bootstrap needs at least one patient and one draw. Received: {num_patients} patients, {draws} draws")
    picks = np.random.default_rng(seed).integers(0, num_patients, size=(draws, num_patients))
    offsets = np.arange(draws)[:, None] * num_patients
    return np.bincount((picks + offsets).ravel(), minlength=draws * num_patients).reshape(draws, num_patients)


def weighted_auc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one label under each row of ``weights``; NaN where a row leaves one class only.

    With integer weights (how often each sample is repeated) this is exactly the AUC of the repeated
    sample: the weighted Mann-Whitney statistic, every positive/negative pair counted
    ``w_pos * w_neg`` times, ties 1/2, divided by ``W_pos * W_neg``.

    Args:
        y_true: ``(N,)`` 0/1.
        y_score: ``(N,)`` scores.
        weights: ``(D, N)`` non-negative weights, one row per resample.

    Returns:
        ``(D,)`` float64 AUCs.
    """
    truth = np.asarray(y_true).astype(bool)
    score = np.asarray(y_score, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(score, kind="stable")
    sorted_score = score[order]
    # Start of each run of equal scores in ascending order: tied scores form one group.
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    sorted_weights = weights[:, order]
    positive_mask = truth[order]
    positive = np.add.reduceat(sorted_weights * positive_mask, starts, axis=1)
    negative = np.add.reduceat(sorted_weights * ~positive_mask, starts, axis=1)
    negatives_below = np.cumsum(negative, axis=1) - negative
    pairs = (positive * (negatives_below + 0.5 * negative)).sum(axis=1)
    total = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, pairs / np.where(total > 0, total, 1.0), np.nan)


def _patient_codes(groups: np.ndarray, length: int) -> tuple[np.ndarray, int]:
    groups = np.asarray(groups)
    if groups.shape != (length,):
        raise ValueError(f"`groups` must hold one patient key per image, shape ({length},). Received: {groups.shape}")
    # Patients in sorted key order, so the resamples do not depend on the order of the rows.
    _, codes = np.unique(groups, return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1


def _label_losses(y_true: np.ndarray, y_prob: np.ndarray, eps: float) -> np.ndarray:
    """Per image and label log loss ``(N, L)`` after clipping to ``[eps, 1 - eps]``."""
    prob = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    truth = np.asarray(y_true, dtype=np.float64)
    return -(truth * np.log(prob) + (1 - truth) * np.log(1 - prob))


def bootstrap_draws(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    groups: np.ndarray,
    counts: np.ndarray,
    labels: Sequence[str] = LABELS,
    eps: float = LOG_LOSS_EPS,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-label AUC and the weighted log loss on each patient resample given by ``counts``.

    A resample repeats every image of patient ``p`` ``counts[d, p]`` times (patients numbered in sorted
    order of their ``groups`` key); no resampled array is built, the counts act as weights.

    Args:
        y_true: ``(N, L)`` 0/1.
        y_prob: ``(N, L)`` probabilities.
        groups: ``(N,)`` patient key of each image.
        counts: ``(D, P)`` times each of the ``P`` patients is drawn in each of ``D`` resamples.

    Returns:
        ``(D, L)`` AUCs (NaN where a label has one class in the resample) and ``(D,)`` weighted log losses.
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    codes, num_patients = _patient_codes(groups, len(y_true))
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != num_patients:
        raise ValueError(f"`counts` must be (draws, {num_patients}) for {num_patients} patients. Received: {counts.shape}")
    counts = counts.astype(np.float64)
    # Log loss: sum each patient's per-label losses once, then each draw is a weighted sum of patients.
    losses = _label_losses(y_true, y_prob, eps)
    patient_losses = np.zeros((num_patients, losses.shape[1]))
    np.add.at(patient_losses, codes, losses)
    patient_images = np.bincount(codes, minlength=num_patients).astype(np.float64)
    per_label = (counts @ patient_losses) / (counts @ patient_images)[:, None]
    label_weights = np.array([LOG_LOSS_WEIGHTS[label] for label in labels])
    log_losses = per_label @ label_weights / label_weights.sum()

    aucs = np.full((len(counts), y_true.shape[1]), np.nan)
    block = max(1, _BLOCK_CELLS // max(1, len(y_true)))
    for start in range(0, len(counts), block):
        weights = counts[start : start + block][:, codes]
        for index in range(y_true.shape[1]):
            aucs[start : start + block, index] = weighted_auc(y_true[:, index], y_prob[:, index], weights)
    return aucs, log_losses


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL, min_valid: int = MIN_VALID_DRAWS) -> list[float] | None:
    """The percentile interval ``[low, high]`` of the finite ``values`` (NaN marks an undefined draw).

    ``low``/``high`` are the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles, numpy's default linear
    interpolation between order statistics. None when fewer than ``min_valid`` values are finite.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < max(1, min_valid):
        return None
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(low), float(high)]


def bootstrap_intervals(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    groups: np.ndarray,
    draws: int = 1000,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
    level: float = CI_LEVEL,
    min_valid: int = MIN_VALID_DRAWS,
) -> dict[str, object]:
    """Patient-level percentile bootstrap intervals of each label's AUC and of the weighted log loss.

    Patients (not images) are resampled with replacement, ``draws`` times (:func:`bootstrap_counts`), so
    the images of one patient stay together, as they are not independent. Rule for an AUC interval:
    None when the label's AUC is undefined on the full set; otherwise the draws in which the label
    has a single class are skipped, and the interval is None if fewer than ``min_valid`` draws remain.

    Returns:
        ``{"auc_ci95": {label: [low, high] | None}, "weighted_log_loss_ci95": [low, high],
        "valid_draws": {label: int}}``.
    """
    y_true = np.asarray(y_true)
    codes, num_patients = _patient_codes(groups, len(y_true))
    counts = bootstrap_counts(num_patients, draws, seed)
    aucs, log_losses = bootstrap_draws(y_true, y_prob, groups, counts, labels)
    auc_intervals: dict[str, list[float] | None] = {}
    valid: dict[str, int] = {}
    for index, label in enumerate(labels):
        column = y_true[:, index]
        valid[label] = int(np.isfinite(aucs[:, index]).sum())
        defined = column.min() != column.max()
        auc_intervals[label] = percentile_interval(aucs[:, index], level, min_valid) if defined else None
    return {
        "auc_ci95": auc_intervals,
        "weighted_log_loss_ci95": percentile_interval(log_losses, level, min_valid=1),
        "valid_draws": valid,
    }


def mean_subtype_auc(aucs: Mapping[str, float | None]) -> float | None:
    """The mean AUC of the five subtypes, or None unless all five are defined.

    A mean over whichever subtypes happen to have both classes would average different labels in
    different runs (a test split without epidural would drop the hardest label), so runs would not be
    comparable; the count of defined subtype AUCs is reported beside it (``subtype_aucs_defined``).
    """
    values = [aucs[subtype] for subtype in SUBTYPES]
    if any(value is None for value in values):
        return None
    return float(np.mean(values))


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
        entry = label_metrics(y_true[:, index], y_prob[:, index], threshold)
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
        result["bootstrap"] = {"unit": "patient", "draws": int(draws), "seed": int(seed), "level": CI_LEVEL, "min_valid_draws": MIN_VALID_DRAWS}
    if series is not None:
        by_series = series_predictions(y_true, y_prob, series, groups)
        result["series"] = int(len(by_series.ids))
        series_level = _summary(by_series.y_true, by_series.y_prob, threshold, series_tuned, by_series.groups, draws, seed)
        series_level["series"] = int(len(by_series.ids))
        result["series_level"] = series_level
    _check_finite(result, "")
    return result
