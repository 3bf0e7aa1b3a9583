"""The chart of one CT series: the six probabilities of its slices along z, with each label's threshold."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ich.core.labels import LABELS
from ich.reports.charts.base import BASE_CONFIG, label_scale, rounded

__all__ = ["probability_chart_spec"]


def probability_chart_spec(z: np.ndarray, probabilities: np.ndarray, thresholds: Mapping[str, float], title: str = "") -> dict:
    """A Vega-Lite line chart of the six probabilities of a series along z, each label's threshold a dashed
    rule in its colour.

    Args:
        z: ``(N,)`` slice positions in mm, in the series' order; when any is unknown (NaN) the x axis is the
            slice's place in the series instead.
        probabilities: ``(N, 6)`` in :data:`LABELS` order.
        thresholds: label -> threshold in [0, 1], every label of :data:`LABELS`.
        title: the chart's title; none when empty.

    Raises:
        ValueError: if ``probabilities`` is not ``(N, 6)`` for the ``N`` of ``z``.
    """
    z = np.asarray(z, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(z), len(LABELS)):
        raise ValueError(
            f"probabilities must have the shape (N, {len(LABELS)}) with N = len(z) = {len(z)}. Received: {probabilities.shape}"
        )
    by_position = bool(len(z)) and bool(np.isfinite(z).all())
    x_values = z if by_position else np.arange(len(z), dtype=np.float64)
    values = [
        {"x": round(float(x_values[row]), 4), "label": label, "p": rounded(probabilities[row, index])}
        for row in range(len(z))
        for index, label in enumerate(LABELS)
    ]
    rules = [{"label": label, "threshold": rounded(thresholds[label])} for label in LABELS]
    color = {
        "field": "label",
        "type": "nominal",
        "title": None,
        "sort": list(LABELS),
        "scale": label_scale(LABELS, LABELS),
        "legend": {"orient": "right"},
    }
    x_title = "slice position z (mm)" if by_position else "slice (z order)"
    return {
        "title": {"text": title, "subtitle": "probability per label along z; dashed: each label's threshold"} if title else None,
        "width": 560,
        "height": 170,
        "layer": [
            {
                "data": {"values": rules},
                "mark": {"type": "rule", "strokeDash": [4, 4], "strokeWidth": 1, "opacity": 0.6},
                "encoding": {"y": {"field": "threshold", "type": "quantitative"}, "color": color},
            },
            {
                "data": {"values": values},
                "mark": {"type": "line", "point": {"size": 18}, "strokeWidth": 1.5},
                "encoding": {
                    "x": {"field": "x", "type": "quantitative", "title": x_title, "scale": {"zero": False}},
                    "y": {"field": "p", "type": "quantitative", "title": "probability", "scale": {"domain": [0, 1]}},
                    "color": color,
                },
            },
        ],
        "config": BASE_CONFIG,
    }
