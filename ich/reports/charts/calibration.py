"""Calibration (reliability): per-bin mean prediction vs observed frequency, by scikit-learn, and its chart."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve

from ich.core.labels import LABELS
from ich.reports.charts.base import BASE_CONFIG, UNIT_SCALE, check_predictions, label_scale, rounded

__all__ = ["CALIBRATION_STRATEGIES", "calibration_edges", "calibration_bins", "calibration_spec"]

#: How :func:`calibration_bins` places its bins (``sklearn.calibration.calibration_curve``'s strategies).
CALIBRATION_STRATEGIES: tuple[str, ...] = ("uniform", "quantile")
_COLUMNS = ["bin", "low", "high", "mean_predicted", "observed", "count"]


def calibration_edges(y_prob: np.ndarray, bins: int, strategy: str) -> np.ndarray:
    """The ``bins + 1`` bin edges that ``sklearn.calibration.calibration_curve`` uses, computed as it does.

    ``uniform``: ``bins`` equal-width bins of [0, 1]; ``quantile``: the ``0, 100/bins, ..., 100`` percentiles of
    ``y_prob`` (``np.percentile``, linear interpolation), so edges repeat where values tie.
    """
    if strategy == "quantile":
        return np.percentile(y_prob, np.linspace(0, 1, bins + 1) * 100)
    return np.linspace(0.0, 1.0, bins + 1)


def calibration_bins(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability table of one label: bins of the predicted probability, with the mean prediction, the
    observed share of positives and the number of images of each.

    The means are ``sklearn.calibration.calibration_curve``'s; the edges and counts are computed with the
    edges it uses (:func:`calibration_edges`) and its rule: a bin holds ``low < p <= high``, the first one also
    ``p == low``. At natural prevalence (most images near 0) ``uniform`` still shows the high-probability range,
    where the bins are small (see ``count``); ``quantile`` gives bins of about equal counts, and a value that
    fills several quantiles gets a bin of its own (``low == high``) while the bins it fills twice stay empty.

    Args:
        y_true: ``(N,)`` 0/1.
        y_prob: ``(N,)`` probabilities in [0, 1].
        bins: the number of bins (before empty ones are dropped), >= 1.
        strategy: one of :data:`CALIBRATION_STRATEGIES`.

    Returns:
        One row per non-empty bin, in order: ``bin`` (0-based), ``low``, ``high`` (edges), ``mean_predicted``,
        ``observed`` (share of positives) and ``count``.

    Raises:
        ValueError: on ``bins < 1``, an unknown strategy, arrays of different or zero length, or ``y_true``
            holding anything but 0 and 1.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer. Received: {bins}")
    if strategy not in CALIBRATION_STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(CALIBRATION_STRATEGIES)}. Received: {strategy!r}")
    y_true = np.asarray(y_true).ravel()
    y_prob = np.asarray(y_prob, dtype=np.float64).ravel()
    if len(y_true) != len(y_prob) or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_prob must be two non-empty arrays of one length. Received: {len(y_true)} and {len(y_prob)}"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 and 1. Received the values {np.unique(y_true)[:10].tolist()}")
    observed, mean_predicted = calibration_curve(y_true.astype(int), y_prob, n_bins=int(bins), strategy=strategy)
    edges = calibration_edges(y_prob, int(bins), strategy)
    # np.digitize(right=True) is np.searchsorted(side="left"), calibration_curve's own assignment to bins
    counts = np.bincount(np.digitize(y_prob, edges[1:-1], right=True), minlength=int(bins))
    filled = np.flatnonzero(counts)
    if len(filled) != len(observed):  # only if scikit-learn changes how it bins
        raise RuntimeError(
            f"calibration_curve returned {len(observed)} bins where the edges it uses hold {len(filled)} non-empty ones; "
            "the installed scikit-learn bins differently from calibration_edges."
        )
    return pd.DataFrame(
        {
            "bin": filled.astype(int),
            "low": edges[filled].astype(float),
            "high": edges[filled + 1].astype(float),
            "mean_predicted": np.asarray(mean_predicted, dtype=float),
            "observed": np.asarray(observed, dtype=float),
            "count": counts[filled].astype(int),
        },
        columns=_COLUMNS,
    )


def calibration_spec(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    labels: Sequence[str] = LABELS,
    bins: int = 10,
    strategy: str = "uniform",
    columns: int = 3,
    title: str = "Calibration (reliability)",
) -> dict:
    """Per label, mean predicted probability vs observed frequency in bins, with the diagonal.

    One small chart per label (``columns`` per row); the count of images in each bin is in the tooltip
    and sets the size of its point. Arguments as :func:`roc_spec` and :func:`calibration_bins`.
    """
    y_true, y_prob = check_predictions(y_true, y_prob, labels)
    values = []
    for index, label in enumerate(labels):
        table = calibration_bins(y_true[:, index], y_prob[:, index], bins, strategy)
        for row in table.itertuples(index=False):
            values.append(
                {
                    "label": label,
                    "bin": int(row.bin),
                    "low": rounded(row.low),
                    "high": rounded(row.high),
                    "mean_predicted": rounded(row.mean_predicted),
                    "observed": rounded(row.observed),
                    "count": int(row.count),
                }
            )
    scale = dict(UNIT_SCALE)
    x = {"field": "mean_predicted", "type": "quantitative", "title": "mean predicted probability", "scale": scale}
    y = {"field": "observed", "type": "quantitative", "title": "observed frequency", "scale": scale}
    color = {
        "field": "label",
        "type": "nominal",
        "title": "label",
        "scale": label_scale(labels, labels),
        "legend": {"orient": "right"},
    }
    tooltip = [
        {"field": "label", "type": "nominal"},
        {"field": "bin", "type": "ordinal", "title": "bin"},
        {"field": "low", "type": "quantitative", "title": "bin from", "format": ".3f"},
        {"field": "high", "type": "quantitative", "title": "bin to", "format": ".3f"},
        {"field": "mean_predicted", "type": "quantitative", "title": "mean predicted", "format": ".3f"},
        {"field": "observed", "type": "quantitative", "title": "observed", "format": ".3f"},
        {"field": "count", "type": "quantitative", "title": "images"},
    ]
    return {
        "title": {
            "text": title,
            "subtitle": f"{len(y_true)} images, {bins} {'equal-width' if strategy == 'uniform' else 'quantile'} bins per label "
            "(point size: images in the bin); dashed: perfect calibration",
        },
        "data": {"values": values},
        "facet": {"field": "label", "type": "nominal", "sort": list(labels), "title": None},
        "columns": columns,
        "spec": {
            "width": 220,
            "height": 220,
            "layer": [
                {
                    "mark": {"type": "rule", "color": "#999999", "strokeDash": [5, 5], "strokeWidth": 1},
                    "encoding": {
                        "x": {"datum": 0, "scale": scale},
                        "y": {"datum": 0, "scale": scale},
                        "x2": {"datum": 1},
                        "y2": {"datum": 1},
                    },
                },
                {
                    "mark": {"type": "line", "strokeWidth": 2},
                    "encoding": {"x": x, "y": y, "color": color, "order": {"field": "bin", "type": "quantitative"}},
                },
                {
                    "mark": {"type": "point", "filled": True, "opacity": 1},
                    "encoding": {
                        "x": x,
                        "y": y,
                        "color": color,
                        "size": {
                            "field": "count",
                            "type": "quantitative",
                            "title": "images in bin",
                            "scale": {"range": [20, 160]},
                            "legend": None,
                        },
                        "tooltip": tooltip,
                    },
                },
            ],
        },
        "config": BASE_CONFIG,
    }
