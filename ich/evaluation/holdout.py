"""The evaluate stage's scoring of the held-out test split: the final predictions and, with a sequence model, the
CNN alone beside them and the paired context gain. Arrays in, the full result (``metrics/evaluate_detail.json``)
out."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from ich.evaluation.comparison import paired_log_loss_change
from ich.evaluation.metrics import evaluate_predictions, series_predictions, tune_thresholds

__all__ = ["score_test"]


def _score(
    truth: Mapping[str, np.ndarray],
    probabilities: Mapping[str, np.ndarray],
    slice_thresholds: Mapping[str, float],
    val_series: np.ndarray,
    test_groups: np.ndarray,
    test_series: np.ndarray,
    threshold: float,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    # Slice thresholds were tuned on val when the model was trained (the card's); series thresholds here, on val.
    on_val = series_predictions(truth["val"], probabilities["val"], val_series)
    return evaluate_predictions(
        truth["test"],
        probabilities["test"],
        threshold,
        dict(slice_thresholds),
        groups=test_groups,
        series=test_series,
        series_tuned=tune_thresholds(on_val.y_true, on_val.y_prob, default=threshold),
        draws=draws,
        seed=seed,
    )


def score_test(
    *,
    truth: Mapping[str, np.ndarray],
    final: Mapping[str, np.ndarray],
    thresholds: Mapping[str, float],
    val_series: np.ndarray,
    test_groups: np.ndarray,
    test_series: np.ndarray,
    threshold: float,
    draws: int,
    seed: int,
    cnn: Mapping[str, np.ndarray] | None = None,
    cnn_thresholds: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The full evaluation of the test split.

    Args:
        truth, final, cnn: per split (``val``, ``test``) the ``(N, 6)`` labels, the final probabilities and (with a
            sequence model) the CNN's own; thresholds / cnn_thresholds: their validation-tuned slice thresholds.
        val_series, test_series, test_groups: series keys of each split's rows and the test rows' patient keys.
        threshold, draws, seed: ``evaluate.threshold``, ``evaluate.bootstrap_draws``, ``evaluate.seed``.
    """
    score = partial(
        _score,
        val_series=val_series,
        test_groups=test_groups,
        test_series=test_series,
        threshold=threshold,
        draws=draws,
        seed=seed,
    )
    metrics = score(truth, final, thresholds)
    if cnn is not None:
        by_cnn = score(truth, cnn, cnn_thresholds or thresholds)
        metrics["by_model"] = {"cnn": by_cnn, "sequence": dict(metrics)}
        metrics["context_gain"] = paired_log_loss_change(truth["test"], cnn["test"], final["test"], test_groups, draws, seed)
    return metrics
