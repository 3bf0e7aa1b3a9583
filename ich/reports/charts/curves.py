"""ROC and precision-recall charts: one Vega-Lite chart each, a curve per label, from ``(N, L)`` arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ich.core.labels import LABELS
from ich.reports.charts.base import BASE_CONFIG, UNIT_SCALE, check_predictions, finite_or_none, label_scale, rounded, thin

__all__ = ["roc_spec", "precision_recall_spec"]


def roc_spec(
    y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str] = LABELS, max_points: int = 300, title: str = "ROC curves"
) -> dict:
    """One ROC chart with a curve per label, each named with its AUC in the legend.

    A label with a single class in ``y_true`` has no ROC curve; the legend says so and it draws nothing.

    Args:
        y_true: ``(N, L)`` 0/1, one column per label.
        y_prob: ``(N, L)`` probabilities.
        labels: the ``L`` column names (default :data:`LABELS`).
        max_points: the most points kept per curve (evenly thinned, ends kept).

    Raises:
        ValueError: if the shapes disagree or ``y_true`` is not 0/1.
    """
    y_true, y_prob = check_predictions(y_true, y_prob, labels)
    values, series = [], []
    for index, label in enumerate(labels):
        truth, scores = y_true[:, index], y_prob[:, index]
        if truth.min() == truth.max():
            series.append(f"{label}: no AUC (one class only)")
            continue
        name = f"{label} (AUC {roc_auc_score(truth, scores):.3f})"
        series.append(name)
        fpr, tpr, thresholds = roc_curve(truth, scores)
        for order, point in enumerate(thin(len(fpr), max_points)):
            values.append(
                {
                    "label": label,
                    "series": name,
                    "order": order,
                    "fpr": rounded(fpr[point]),
                    "tpr": rounded(tpr[point]),
                    "threshold": finite_or_none(thresholds[point]),
                }
            )
    scale = dict(UNIT_SCALE)
    return {
        "title": {"text": title, "subtitle": f"{len(y_true)} images; dashed: chance"},
        "width": 420,
        "height": 420,
        "layer": [
            {
                "data": {"values": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]},
                "mark": {"type": "line", "color": "#999999", "strokeDash": [5, 5], "strokeWidth": 1},
                "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}},
            },
            {
                "data": {"values": values},
                "mark": {"type": "line", "strokeWidth": 2, "interpolate": "linear"},
                "encoding": {
                    "x": {
                        "field": "fpr",
                        "type": "quantitative",
                        "title": "false positive rate (1 - specificity)",
                        "scale": scale,
                    },
                    "y": {"field": "tpr", "type": "quantitative", "title": "true positive rate (sensitivity)", "scale": scale},
                    "order": {"field": "order", "type": "quantitative"},
                    "color": {
                        "field": "series",
                        "type": "nominal",
                        "title": "label",
                        "scale": label_scale(series, labels),
                        # below the chance line: where a curve goes only when it is worse than guessing
                        "legend": {"orient": "bottom-right", "fillColor": "white", "padding": 6, "strokeColor": "#dddddd"},
                    },
                    "tooltip": [
                        {"field": "label", "type": "nominal"},
                        {"field": "fpr", "type": "quantitative", "format": ".3f"},
                        {"field": "tpr", "type": "quantitative", "format": ".3f"},
                        {"field": "threshold", "type": "quantitative", "format": ".3f"},
                    ],
                },
            },
        ],
        "config": BASE_CONFIG,
    }


def precision_recall_spec(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    labels: Sequence[str] = LABELS,
    max_points: int = 300,
    prevalence_baselines: bool = True,
    title: str = "Precision-recall curves",
) -> dict:
    """One precision-recall chart with a curve per label, named with its average precision (AP).

    With ``prevalence_baselines`` each label also gets a dashed line at its prevalence: the precision of
    a classifier that guesses. Arguments as :func:`roc_spec`; a label without positives draws nothing.
    """
    y_true, y_prob = check_predictions(y_true, y_prob, labels)
    values, baselines, series = [], [], []
    for index, label in enumerate(labels):
        truth, scores = y_true[:, index], y_prob[:, index]
        prevalence = float(truth.mean())
        if truth.max() == 0:
            series.append(f"{label}: no positives")
            continue
        name = f"{label} (AP {average_precision_score(truth, scores):.3f}, prevalence {prevalence:.1%})"
        series.append(name)
        precision, recall, thresholds = precision_recall_curve(truth, scores)
        # sklearn lists the points from the lowest threshold (recall 1) to the end point (recall 0, precision
        # 1). Of the points that share a recall only the last (highest threshold, best precision) counts in
        # the average precision; the chart draws those by rising recall, each precision held back to the
        # previous recall (a step before the point): the curve whose area is the AP.
        distinct = np.flatnonzero(np.append(recall[:-1] != recall[1:], True))
        points = distinct[thin(len(distinct), max_points)]
        for order, point in enumerate(points):
            values.append(
                {
                    "label": label,
                    "series": name,
                    "order": len(points) - 1 - order,
                    "recall": rounded(recall[point]),
                    "precision": rounded(precision[point]),
                    "threshold": finite_or_none(thresholds[point]) if point < len(thresholds) else None,
                }
            )
        baselines.append({"label": label, "series": name, "prevalence": rounded(prevalence)})
    scale = dict(UNIT_SCALE)
    color = {
        "field": "series",
        "type": "nominal",
        "title": "label",
        "scale": label_scale(series, labels),
        "legend": {"orient": "right"},
    }
    layers = [
        {
            "data": {"values": values},
            "mark": {"type": "line", "strokeWidth": 2, "interpolate": "step-before"},
            "encoding": {
                "x": {"field": "recall", "type": "quantitative", "title": "recall (sensitivity)", "scale": scale},
                "y": {
                    "field": "precision",
                    "type": "quantitative",
                    "title": "precision (positive predictive value)",
                    "scale": scale,
                },
                "order": {"field": "order", "type": "quantitative"},
                "color": color,
                "tooltip": [
                    {"field": "label", "type": "nominal"},
                    {"field": "recall", "type": "quantitative", "format": ".3f"},
                    {"field": "precision", "type": "quantitative", "format": ".3f"},
                    {"field": "threshold", "type": "quantitative", "format": ".3f"},
                ],
            },
        }
    ]
    if prevalence_baselines and baselines:
        layers.append(
            {
                "data": {"values": baselines},
                "mark": {"type": "rule", "strokeDash": [4, 4], "strokeWidth": 1.5, "opacity": 0.8},
                "encoding": {
                    "y": {"field": "prevalence", "type": "quantitative"},
                    "color": color,
                    "tooltip": [
                        {"field": "label", "type": "nominal"},
                        {"field": "prevalence", "type": "quantitative", "format": ".2%"},
                    ],
                },
            }
        )
    subtitle = f"{len(y_true)} images" + ("; dashed: prevalence (chance level)" if prevalence_baselines else "")
    return {
        "title": {"text": title, "subtitle": subtitle},
        "width": 420,
        "height": 420,
        "layer": layers,
        "config": BASE_CONFIG,
    }
