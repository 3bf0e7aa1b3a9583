"""Patient-level bootstrap: resampling whole patients for 95 % percentile intervals of AUC and weighted log loss.

Slices of one patient are correlated, so resampling slices would make intervals too narrow; every draw resamples
patients with replacement and weights their slices by how often each was drawn. Memory is bounded: draws are
processed in blocks of about a million (draw, slice) cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ich.core.labels import LABELS, LOG_LOSS_EPS, LOG_LOSS_WEIGHTS

__all__ = [
    "CI_LEVEL",
    "MIN_VALID_DRAWS",
    "bootstrap_counts",
    "weighted_auc",
    "bootstrap_draws",
    "percentile_interval",
    "bootstrap_intervals",
]

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
