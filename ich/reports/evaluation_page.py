"""The evaluate stage's page: its charts as PNGs and one self-contained, offline ``report.html``.

The charts are Vega-Lite specs (:mod:`ich.reports.charts`) drawn by vl-convert; the page is the template
``evaluation.html`` (on ``base.html``), its images embedded as ``data:`` URIs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ich.core.files import atomic_write_bytes, atomic_write_text
from ich.core.labels import LABELS
from ich.reports.charts import (
    calibration_spec,
    png_size,
    precision_recall_spec,
    read_training_curves,
    render_png,
    roc_spec,
    training_specs,
)
from ich.reports.templating import render_page

__all__ = ["LABEL_COLUMNS", "report_html", "write_report", "evaluation_charts"]

_CHART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Column:
    """A column of the per-label table: the key in ``evaluate.json``, its heading and its kind of number
    (a key of :data:`ich.reports.formatting.FORMATTERS`)."""

    key: str
    heading: str
    kind: str


#: The per-label table, in order; a column shows when any label has its key.
LABEL_COLUMNS: tuple[Column, ...] = (
    Column("positives", "positives", "count"),
    Column("auc", "AUC", "metric"),
    Column("auc_ci95", "AUC 95% CI", "interval"),
    Column("precision", "precision", "metric"),
    Column("recall", "recall", "metric"),
    Column("f1", "F1", "metric"),
    Column("threshold", "threshold", "probability"),
)


@dataclass(frozen=True)
class LabelRow:
    label: str
    cells: dict[str, object]


@dataclass(frozen=True)
class OverallRow:
    """One figure of the whole test set: ``value`` of kind ``kind`` and its 95% interval ``ci`` (or ``None``)."""

    name: str
    value: object
    kind: str
    ci: object = None


@dataclass(frozen=True)
class Figure:
    """A chart on the page: its PNG and its size in CSS pixels."""

    name: str
    png: bytes
    width: int
    height: int


def _overall_rows(summary: Mapping) -> list[OverallRow]:
    rows = []
    if "weighted_log_loss" in summary:
        rows.append(
            OverallRow(
                "weighted log loss (any ×2, subtypes ×1)",
                summary["weighted_log_loss"],
                "loss",
                summary.get("weighted_log_loss_ci95"),
            )
        )
    if "mean_subtype_auc" in summary:
        rows.append(OverallRow("mean subtype AUC", summary["mean_subtype_auc"], "metric"))
    by_model = summary.get("by_model")
    if isinstance(by_model, Mapping):
        for model, metrics in sorted(by_model.items()):
            if isinstance(metrics, Mapping):
                rows.append(OverallRow(f"{model}: weighted log loss", metrics.get("weighted_log_loss"), "loss"))
                rows.append(OverallRow(f"{model}: mean subtype AUC", metrics.get("mean_subtype_auc"), "metric"))
    return rows


def report_html(images: Mapping[str, bytes], title: str, summary: Mapping | None = None, scale: float = 2.0) -> str:
    """The self-contained HTML page: ``title``, the headline metrics, and every PNG embedded as a data URI.

    ``images`` maps chart names to PNG bytes drawn at ``scale``; they are shown at their size in CSS pixels
    (pixel size / ``scale``), in the mapping's order. No external file, script, font or URL.
    """
    summary = summary or {}
    labels = [label for label in LABELS if isinstance(summary.get(label), Mapping)]
    columns = [column for column in LABEL_COLUMNS if any(column.key in summary[label] for label in labels)]
    label_rows = (
        [LabelRow(label, {column.key: summary[label].get(column.key) for column in columns}) for label in labels]
        if columns
        else []
    )
    figures = []
    for name, png in images.items():
        width, height = png_size(png)
        figures.append(Figure(name, png, round(width / scale), round(height / scale)))
    return render_page(
        "evaluation.html",
        title=title,
        heading=title,
        label_columns=columns,
        label_rows=label_rows,
        overall_rows=_overall_rows(summary),
        figures=figures,
    )


def write_report(
    folder: str | os.PathLike,
    charts: Mapping[str, Mapping],
    title: str,
    summary: Mapping | None = None,
    scale: float = 2.0,
) -> Path:
    """Render every chart to ``<folder>/<name>.png`` and write ``<folder>/report.html`` holding them all.

    The same charts, title and summary give the same bytes. Files of charts not named here are left alone.

    Args:
        folder: output folder, created if missing.
        charts: chart name -> Vega-Lite spec, in the order the report shows them. Names become file names:
            letters, digits, ``_``, ``-`` and ``.``, not starting with a dot.
        title: the page title.
        summary: optional ``metrics/evaluate.json``-shaped mapping (per label ``auc``, ``auc_ci95``...;
            top-level ``weighted_log_loss``...), shown as tables.
        scale: pixel scale of the PNGs.

    Returns:
        The path of ``report.html``.

    Raises:
        ValueError: on a chart name that is not a safe file name, or the reserved name ``report``.
    """
    for name in charts:
        if not _CHART_NAME.fullmatch(name) or name == "report":
            raise ValueError(
                f"Chart names become file names: letters, digits, '_', '-' and '.', not starting with a dot, "
                f"and not 'report'. Received: {name!r}"
            )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = {name: render_png(spec, scale) for name, spec in charts.items()}
    for name, png in images.items():
        atomic_write_bytes(folder / f"{name}.png", png)
    path = folder / "report.html"
    atomic_write_text(path, report_html(images, title, summary, scale))
    return path


def evaluation_charts(curves_folder: str | os.PathLike | None, y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, dict]:
    """The evaluate stage's charts: training curves per network (when ``curves_folder`` holds dvclive's
    TSVs), then ROC, precision-recall and calibration of the predictions (``(N, 6)``, :data:`LABELS` order)."""
    charts: dict[str, dict] = {}
    if curves_folder is not None and Path(curves_folder).is_dir():
        charts.update(training_specs(read_training_curves(curves_folder)))
    charts["roc"] = roc_spec(y_true, y_prob)
    charts["precision_recall"] = precision_recall_spec(y_true, y_prob)
    charts["calibration"] = calibration_spec(y_true, y_prob)
    return charts
