"""The page of `ich experiments`: every run of the repository in one table (its headline metrics with their 95 %
intervals, the params in which runs differ) and the ROC and precision-recall curves of any two runs overlaid,
picked from two lists on the page (Vega-Lite, drawn in the page by the Vega libraries that vl-convert bundles:
one self-contained, offline HTML file). This layer gets plain data (rows as mappings, arrays), no evaluation code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ich.core.files import atomic_write_text
from ich.core.labels import LABELS
from ich.reports.charts import BASE_CONFIG
from ich.reports.charts.base import check_predictions, rounded
from ich.reports.compare_page import CURVE_KINDS, RUN_COLORS, _curve
from ich.reports.templating import render_page

__all__ = ["curve_points", "pick_two_spec", "experiments_html", "write_experiments_page"]


def curve_points(y_true: np.ndarray, probabilities: Mapping[str, np.ndarray], max_points: int = 100) -> list[dict]:
    """Every run's ROC and precision-recall points per label (labels without both classes are left out):
    rows of ``run, label, kind, x, y, summary`` (AUC or AP)."""
    points = []
    for run, scores in probabilities.items():
        y_true, scores = check_predictions(y_true, scores, LABELS)
        for index, label in enumerate(LABELS):
            truth = y_true[:, index]
            if truth.min() == truth.max():
                continue
            for kind in CURVE_KINDS:
                summary, curve = _curve(kind, truth, scores[:, index], max_points)
                points += [
                    {"run": run, "label": label, "kind": kind, "x": rounded(x), "y": rounded(y), "summary": round(summary, 4)}
                    for x, y in curve
                ]
    return points


def pick_two_spec(points: list[dict], runs: Sequence[str]) -> dict:
    """ROC and precision-recall side by side for the two runs and the label chosen in the page's lists."""
    first, second = runs[0], runs[1] if len(runs) > 1 else runs[0]
    params = [
        {"name": "run_a", "value": first, "bind": {"input": "select", "options": list(runs), "name": "run A "}},
        {"name": "run_b", "value": second, "bind": {"input": "select", "options": list(runs), "name": "run B "}},
        {"name": "label", "value": LABELS[0], "bind": {"input": "select", "options": list(LABELS), "name": "label "}},
    ]
    panels = []
    for kind, (_, _, x_title, y_title, summary) in CURVE_KINDS.items():
        side = {"field": "side", "type": "nominal", "title": None, "scale": {"domain": ["A", "B"], "range": list(RUN_COLORS)}}
        panels.append(
            {
                "title": "ROC" if kind == "roc" else "precision-recall",
                "width": 300,
                "height": 300,
                "transform": [
                    {"filter": f"datum.kind === '{kind}' && datum.label === label"},
                    {"filter": "datum.run === run_a || datum.run === run_b"},
                    {"calculate": "datum.run === run_a ? 'A' : 'B'", "as": "side"},
                ],
                "layer": [
                    {
                        "mark": {"type": "line", "interpolate": "linear" if kind == "roc" else "step-before"},
                        "encoding": {
                            "x": {"field": "x", "type": "quantitative", "title": x_title, "scale": {"domain": [0, 1]}},
                            "y": {"field": "y", "type": "quantitative", "title": y_title, "scale": {"domain": [0, 1]}},
                            "color": {**side, "legend": None},
                            "detail": {"field": "run"},
                            "order": {"field": "order", "type": "quantitative"},
                        },
                    },
                    {  # one caption per run: "A: name  AUC 0.997", at the foot of the panel
                        "transform": [
                            {"aggregate": [{"op": "max", "field": "summary", "as": "summary"}], "groupby": ["side", "run"]}
                        ],
                        "mark": {"type": "text", "align": "right", "fontSize": 11, "x": 295},
                        "encoding": {
                            "y": {"value": 240},
                            "yOffset": {"field": "side", "type": "nominal", "scale": {"domain": ["A", "B"], "range": [0, 16]}},
                            "text": {
                                "value": {
                                    "expr": f"datum.side + ': ' + datum.run + '  {summary} ' + format(datum.summary, '.3f')"
                                }
                            },
                            "color": {**side, "legend": None},
                        },
                    },
                ],
            }
        )
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "params": params,
        "data": {"values": [dict(point, order=index) for index, point in enumerate(points)]},
        "hconcat": panels,
        "config": BASE_CONFIG,
    }


def experiments_html(
    title: str,
    columns: Sequence[Mapping[str, str]],
    rows: Sequence[Mapping[str, object]],
    params: Sequence[str],
    notes: Sequence[str],
    spec: dict | None,
) -> str:
    """The page: one row per run (``name``, ``rev``, ``kind``, ``created``, ``params``, ``values``: column ->
    (value, interval)), the headline ``columns`` (``name``, ``kind``), the changed ``params``, ``notes``, and the
    curves' ``spec`` (None: no run had test predictions to draw)."""
    bundle = ""
    if spec is not None:
        import vl_convert

        bundle = vl_convert.javascript_bundle()  # type: ignore[call-arg]  # the snippet is optional
        bundle = bundle.replace("</script", "<\\/script")
    return render_page(
        "experiments.html",
        title=title,
        heading=title,
        columns=columns,
        rows=rows,
        params=params,
        notes=notes,
        spec=json.dumps(spec).replace("<", "\\u003c") if spec is not None else None,  # no "</script>" from a run name
        bundle=bundle,
    )


def write_experiments_page(path: str | os.PathLike, **page: object) -> Path:
    """Write :func:`experiments_html` (its arguments by name) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, experiments_html(**page))  # type: ignore[arg-type]
    return path
