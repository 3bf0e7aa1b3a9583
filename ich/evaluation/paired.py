"""Is B better than A? The paired patient-bootstrap difference of the weighted log loss and of each AUC between
two runs' predictions on the same test images.

Each draw resamples patients once (:func:`ich.evaluation.bootstrap.bootstrap_counts`) and scores both runs on that
same resample (:func:`ich.evaluation.bootstrap.bootstrap_draws`), so the interval is the one of the difference
``B - A``: far narrower than the two runs' own intervals suggest, as most of the sampling noise is shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ich.core.labels import LABELS, SUBTYPES
from ich.evaluation.bootstrap import MIN_VALID_DRAWS, bootstrap_counts, bootstrap_draws, percentile_interval
from ich.evaluation.metrics import mean_subtype_auc, safe_auc, weighted_log_loss

__all__ = ["BETTER", "WORSE", "NO_DIFFERENCE", "UNDEFINED", "MetricDifference", "paired_draws", "paired_comparison"]

#: The verdicts on one metric, from the 95 % interval of ``B - A``.
BETTER, WORSE, NO_DIFFERENCE, UNDEFINED = "B better", "B worse", "no difference shown", "undefined"


@dataclass(frozen=True)
class MetricDifference:
    """One metric of runs A and B on the same images, and the paired bootstrap of ``B - A``.

    ``name`` is the metric's key as in ``metrics/evaluate.json`` (``weighted_log_loss``, ``<label>.auc``,
    ``mean_subtype_auc``); ``kind`` its kind of number (``loss`` or ``metric``). Values are None where the metric is
    undefined (an AUC of a label with one class); intervals are None with too few draws in which it is defined.
    ``share_b_better`` is the share of those draws in which B is strictly better (ties count as not better).
    """

    name: str
    kind: str
    lower_is_better: bool
    a: float | None
    b: float | None
    difference: float | None
    a_ci95: list[float] | None
    b_ci95: list[float] | None
    difference_ci95: list[float] | None
    share_b_better: float | None
    valid_draws: int
    verdict: str


def _verdict(interval: list[float] | None, lower_is_better: bool) -> str:
    """B better/worse when the 95 % interval of ``B - A`` lies entirely on one side of 0."""
    if interval is None:
        return UNDEFINED
    low, high = interval
    if high < 0:
        return BETTER if lower_is_better else WORSE
    if low > 0:
        return WORSE if lower_is_better else BETTER
    return NO_DIFFERENCE


def _difference(
    name: str,
    kind: str,
    point_a: float | None,
    point_b: float | None,
    draws_a: np.ndarray,
    draws_b: np.ndarray,
    min_valid: int,
) -> MetricDifference:
    lower_is_better = kind == "loss"
    valid = np.isfinite(draws_a) & np.isfinite(draws_b)
    defined = point_a is not None and point_b is not None
    b_better = draws_b < draws_a if lower_is_better else draws_b > draws_a
    interval = percentile_interval(draws_b - draws_a, min_valid=min_valid) if defined else None
    return MetricDifference(
        name=name,
        kind=kind,
        lower_is_better=lower_is_better,
        a=point_a,
        b=point_b,
        difference=point_b - point_a if point_a is not None and point_b is not None else None,
        a_ci95=percentile_interval(draws_a, min_valid=min_valid) if point_a is not None else None,
        b_ci95=percentile_interval(draws_b, min_valid=min_valid) if point_b is not None else None,
        difference_ci95=interval,
        share_b_better=float(b_better[valid].mean()) if defined and valid.any() else None,
        valid_draws=int(valid.sum()),
        verdict=_verdict(interval, lower_is_better),
    )


def _checked(
    y_true: np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray, groups: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y_true, prob_a, prob_b = np.asarray(y_true), np.asarray(prob_a, np.float64), np.asarray(prob_b, np.float64)
    if not (y_true.shape == prob_a.shape == prob_b.shape == (len(groups), len(labels))):
        raise ValueError(
            f"y_true, prob_a and prob_b must all be (N, {len(labels)}) with N = len(groups) = {len(groups)}. "
            f"Received: {y_true.shape}, {prob_a.shape}, {prob_b.shape}"
        )
    return y_true, prob_a, prob_b, np.asarray(groups).astype(str)


def paired_draws(
    y_true: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    groups: np.ndarray,
    counts: np.ndarray,
    labels: Sequence[str] = LABELS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each metric of run A and of run B on each patient resample of ``counts``, the same resamples for both.

    Args:
        y_true: ``(N, L)`` 0/1.
        prob_a: ``(N, L)`` run A's probabilities of the same images, same order.
        prob_b: ``(N, L)`` run B's.
        groups: ``(N,)`` patient key of each image.
        counts: ``(D, P)`` times each patient (in sorted key order) is drawn in each resample.

    Returns:
        Metric name (``weighted_log_loss``, ``<label>.auc``, ``mean_subtype_auc`` when every subtype is a label) ->
        A's and B's ``(D,)`` values; NaN where undefined (an AUC of a resample with one class; the mean subtype AUC
        of a resample without all five subtype AUCs, as :func:`ich.evaluation.metrics.mean_subtype_auc`).
    """
    y_true, prob_a, prob_b, groups = _checked(y_true, prob_a, prob_b, groups, labels)
    aucs_a, losses_a = bootstrap_draws(y_true, prob_a, groups, counts, labels)
    aucs_b, losses_b = bootstrap_draws(y_true, prob_b, groups, counts, labels)
    per_draw = {"weighted_log_loss": (losses_a, losses_b)}
    per_draw.update({f"{label}.auc": (aucs_a[:, index], aucs_b[:, index]) for index, label in enumerate(labels)})
    if set(SUBTYPES) <= set(labels):
        columns = [list(labels).index(subtype) for subtype in SUBTYPES]
        per_draw["mean_subtype_auc"] = (aucs_a[:, columns].mean(axis=1), aucs_b[:, columns].mean(axis=1))
    return per_draw


def _points(y_true: np.ndarray, prob: np.ndarray, labels: Sequence[str]) -> dict[str, float | None]:
    """Each metric of one run on all the images."""
    aucs = {label: safe_auc(y_true[:, index], prob[:, index]) for index, label in enumerate(labels)}
    points: dict[str, float | None] = {"weighted_log_loss": weighted_log_loss(y_true, prob, labels)}
    points.update({f"{label}.auc": auc for label, auc in aucs.items()})
    if set(SUBTYPES) <= set(labels):
        points["mean_subtype_auc"] = mean_subtype_auc(aucs)
    return points


def paired_comparison(
    y_true: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    groups: np.ndarray,
    draws: int = 1000,
    seed: int = 0,
    labels: Sequence[str] = LABELS,
) -> list[MetricDifference]:
    """The weighted log loss, each label's AUC and the mean subtype AUC of runs A and B, with the paired bootstrap.

    Patients are numbered in sorted order of their key and drawn as :func:`bootstrap_counts` documents
    (``draws`` resamples from ``seed``), and :func:`paired_draws` scores both runs on the same resamples. Interval
    rules as :func:`ich.evaluation.bootstrap.bootstrap_intervals`: a loss interval needs one draw, an AUC interval
    :data:`MIN_VALID_DRAWS` draws in which it is defined. Memory: ``(draws, images)`` weights in blocks, as
    ``bootstrap_draws``. Arguments as :func:`paired_draws`.

    Returns:
        One :class:`MetricDifference` per metric, in :func:`paired_draws`' order (the weighted log loss first).

    Raises:
        ValueError: shapes that disagree, or ``draws < 1``.
    """
    y_true, prob_a, prob_b, groups = _checked(y_true, prob_a, prob_b, groups, labels)
    counts = bootstrap_counts(len(np.unique(groups)), draws, seed)
    per_draw = paired_draws(y_true, prob_a, prob_b, groups, counts, labels)
    points_a, points_b = _points(y_true, prob_a, labels), _points(y_true, prob_b, labels)
    results = []
    for name, values in per_draw.items():
        kind, min_valid = ("loss", 1) if name == "weighted_log_loss" else ("metric", MIN_VALID_DRAWS)
        results.append(_difference(name, kind, points_a[name], points_b[name], *values, min_valid))
    return results
