"""The page of `ich compare`: two runs on the same test images, one self-contained, offline HTML file.

It shows what each run is, the verdict, a table of each metric of A and B with its 95 % interval and the paired
difference ``B - A`` with its interval and the share of draws in which B is better, and per label the ROC and
precision-recall curves of both runs overlaid (Vega-Lite specs drawn to PNG by vl-convert). The page is the
template ``compare.html`` (on ``base.html``). This layer gets plain data (rows as mappings, arrays), no
evaluation code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ich.core.files import atomic_write_text
from ich.core.labels import LABELS
from ich.reports.charts import BASE_CONFIG, png_size, render_png
from ich.reports.charts.base import UNIT_SCALE, check_predictions, rounded, thin
from ich.reports.formatting import MISSING
from ich.reports.templating import render_page

__all__ = ["RUN_COLORS", "CURVE_KINDS", "overlaid_curves_spec", "compare_html", "write_compare_page"]

#: The two runs' colours (Okabe-Ito blue for A, vermillion for B), the same in every panel.
RUN_COLORS: tuple[str, str] = ("#0072B2", "#D55E00")
#: Kind of chart -> (x field, y field, axis titles, the summary number in each panel's title).
CURVE_KINDS: dict[str, tuple[str, str, str, str, str]] = {
    "roc": ("fpr", "tpr", "false positive rate", "true positive rate", "AUC"),
    "precision_recall": ("recall", "precision", "recall", "precision", "AP"),
}


def _curve(kind: str, truth: np.ndarray, scores: np.ndarray, max_points: int) -> tuple[float, list[tuple[float, float]]]:
    """The summary (AUC or AP) and the points of one curve, in drawing order."""
    if kind == "roc":
        fpr, tpr, _ = roc_curve(truth, scores)
        return float(roc_auc_score(truth, scores)), [(fpr[i], tpr[i]) for i in thin(len(fpr), max_points)]
    precision, recall, _ = precision_recall_curve(truth, scores)
    # As ich.reports.charts.curves: of the points sharing a recall only the last counts in the AP; drawn by
    # rising recall, each precision held back to the previous recall (step-before), the curve whose area is the AP.
    distinct = np.flatnonzero(np.append(recall[:-1] != recall[1:], True))
    points = distinct[thin(len(distinct), max_points)][::-1]
    return float(average_precision_score(truth, scores)), [(recall[i], precision[i]) for i in points]


def overlaid_curves_spec(
    y_true: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    kind: str = "roc",
    labels: Sequence[str] = LABELS,
    max_points: int = 200,
) -> dict:
    """One panel per label with the curve of each run overlaid, its AUC (ROC) or AP (precision-recall) in the title.

    Args:
        y_true: ``(N, L)`` 0/1.
        probabilities: run name -> ``(N, L)`` probabilities of the same images (two runs; colours in order).
        kind: ``roc`` or ``precision_recall``.
        max_points: the most points kept per curve (evenly thinned, ends kept).

    Raises:
        ValueError: an unknown kind, or arrays of other shapes.
    """
    if kind not in CURVE_KINDS:
        raise ValueError(f"kind must be one of {', '.join(CURVE_KINDS)}. Received: {kind!r}")
    x_field, y_field, x_title, y_title, summary = CURVE_KINDS[kind]
    checked = {name: check_predictions(y_true, prob, labels) for name, prob in probabilities.items()}
    names = list(checked)
    panels = []
    for index, label in enumerate(labels):
        values, summaries = [], []
        for name, (truth, prob) in checked.items():
            if truth[:, index].min() == truth[:, index].max():
                continue
            score, points = _curve(kind, truth[:, index], prob[:, index], max_points)
            summaries.append(f"{name} {score:.3f}")
            values += [
                {"run": name, "order": order, x_field: rounded(x), y_field: rounded(y)} for order, (x, y) in enumerate(points)
            ]
        title = f"{label}: {summary} " + ", ".join(summaries) if summaries else f"{label}: no curve (one class only)"
        layers: list[dict] = []
        if kind == "roc":
            layers.append(
                {
                    "data": {"values": [{x_field: 0, y_field: 0}, {x_field: 1, y_field: 1}]},
                    "mark": {"type": "line", "color": "#999999", "strokeDash": [5, 5], "strokeWidth": 1},
                    "encoding": {
                        "x": {"field": x_field, "type": "quantitative"},
                        "y": {"field": y_field, "type": "quantitative"},
                    },
                }
            )
        interpolate = "linear" if kind == "roc" else "step-before"
        layers.append(
            {
                "data": {"values": values},
                "mark": {"type": "line", "strokeWidth": 2, "interpolate": interpolate, "opacity": 0.85},
                "encoding": {
                    "x": {"field": x_field, "type": "quantitative", "title": x_title, "scale": dict(UNIT_SCALE)},
                    "y": {"field": y_field, "type": "quantitative", "title": y_title, "scale": dict(UNIT_SCALE)},
                    "order": {"field": "order", "type": "quantitative"},
                    "color": {
                        "field": "run",
                        "type": "nominal",
                        "title": "run",
                        "scale": {"domain": names, "range": list(RUN_COLORS[: len(names)])},
                        "legend": {"orient": "top"},
                    },
                },
            }
        )
        panels.append({"title": {"text": title, "fontSize": 12}, "width": 220, "height": 220, "layer": layers})
    chart = "ROC curves" if kind == "roc" else "Precision-recall curves"
    return {
        "title": {"text": f"{chart} per label", "subtitle": f"{len(y_true)} images; the two runs overlaid"},
        "columns": 3,
        "concat": panels,
        "resolve": {"scale": {"color": "shared"}},
        "config": BASE_CONFIG,
    }


def compare_html(
    title: str,
    runs: Sequence[Mapping[str, object]],
    rows: Sequence[Mapping[str, object]],
    verdict: str,
    settings: Sequence[tuple[str, str]],
    images: Mapping[str, bytes],
    scale: float = 2.0,
) -> str:
    """The page: the runs (``name``, ``kind``, ``commit``, ``predictions``, ``truth``), the verdict, the settings
    (name, text) and one row per metric (``name``, ``kind``, ``a``, ``a_ci95``, ``b``, ``b_ci95``, ``difference``,
    ``difference_ci95``, ``share_b_better``, ``verdict``), then the PNGs drawn at ``scale``."""
    figures = []
    for name, png in images.items():
        width, height = png_size(png)
        figures.append({"name": name, "png": png, "width": round(width / scale), "height": round(height / scale)})
    return render_page(
        "compare.html",
        title=title,
        heading=title,
        runs=[dict(run, side=side, commit=run.get("commit") or MISSING) for side, run in zip("AB", runs)],
        rows=rows,
        verdict=verdict,
        settings=settings,
        figures=figures,
    )


def write_compare_page(
    path: str | os.PathLike,
    title: str,
    runs: Sequence[Mapping[str, object]],
    rows: Sequence[Mapping[str, object]],
    verdict: str,
    settings: Sequence[tuple[str, str]],
    y_true: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    scale: float = 2.0,
) -> Path:
    """Draw both charts (:func:`overlaid_curves_spec`) and write the page (:func:`compare_html`) to ``path``."""
    images = {kind: render_png(overlaid_curves_spec(y_true, probabilities, kind), scale) for kind in CURVE_KINDS}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, compare_html(title, runs, rows, verdict, settings, images, scale))
    return path
