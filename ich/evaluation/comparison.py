"""Models side by side on the same test images: a one-line summary of each, and the change in the competition
metric with a paired patient bootstrap."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ich.core.labels import LABELS
from ich.evaluation.bootstrap import bootstrap_counts, bootstrap_draws, percentile_interval
from ich.evaluation.metrics import weighted_log_loss

__all__ = ["metrics_summary", "paired_log_loss_change"]


def paired_log_loss_change(
    y_true: np.ndarray, baseline: np.ndarray, candidate: np.ndarray, groups: np.ndarray, draws: int, seed: int
) -> dict[str, float | list[float] | None]:
    """How much ``candidate``'s weighted log loss differs from ``baseline``'s on the same images, with a 95 %
    interval from patient resamples drawn once and applied to both (paired: the interval is of the difference,
    far narrower than the two models' own intervals suggest).

    Returns:
        ``change`` (candidate - baseline; negative = better), ``relative_change`` (change / baseline),
        ``change_ci95`` (``None`` without draws) and ``share_of_draws_better`` (the share of resamples in which
        the candidate's loss is lower).
    """
    baseline_loss, candidate_loss = weighted_log_loss(y_true, baseline), weighted_log_loss(y_true, candidate)
    result: dict[str, float | list[float] | None] = {
        "baseline": baseline_loss,
        "candidate": candidate_loss,
        "change": candidate_loss - baseline_loss,
        "relative_change": (candidate_loss - baseline_loss) / baseline_loss if baseline_loss > 0 else None,
        "change_ci95": None,
        "share_of_draws_better": None,
    }
    if draws > 0:
        counts = bootstrap_counts(len(np.unique(np.asarray(groups).astype(str))), draws, seed)
        _, before = bootstrap_draws(y_true, baseline, np.asarray(groups).astype(str), counts)
        _, after = bootstrap_draws(y_true, candidate, np.asarray(groups).astype(str), counts)
        result["change_ci95"] = percentile_interval(after - before)
        result["share_of_draws_better"] = float(np.mean(after < before))
    return result


def metrics_summary(result: Mapping) -> str:
    """One line of :func:`ich.evaluation.metrics.evaluate_predictions`' result: per-label AUC (``n/a`` where undefined),
    mean subtype AUC and the weighted log loss with its interval."""
    aucs = ", ".join(
        f"{label} {result[label]['auc']:.3f}" if result[label]["auc"] is not None else f"{label} n/a" for label in LABELS
    )
    interval = result.get("weighted_log_loss_ci95")
    shown = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else ""
    return (
        f"AUC {aucs}; mean subtype AUC {result['mean_subtype_auc']}; weighted log loss {result['weighted_log_loss']:.4f}{shown}"
    )
