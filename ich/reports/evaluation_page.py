"""Charts a person reads, offline: Vega-Lite specs built from data, rendered to PNG, and one HTML report.

The spec builders are pure: arrays or tables in, a Vega-Lite spec (a plain ``dict``) out, with the data
inlined, so a spec renders the same anywhere. :func:`render_png` draws a spec with vl-convert (no browser,
no network) and :func:`write_report` writes one PNG per chart and a self-contained ``report.html`` whose
images are embedded as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import vl_convert
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ich.core.files import atomic_write_bytes, atomic_write_text
from ich.core.labels import LABELS

__all__ = [
    "LABEL_COLORS",
    "SPLIT_NAMES",
    "read_training_curves",
    "training_spec",
    "training_specs",
    "roc_spec",
    "precision_recall_spec",
    "CALIBRATION_STRATEGIES",
    "calibration_bins",
    "calibration_spec",
    "render_png",
    "report_html",
    "evaluation_charts",
    "write_report",
]

#: One colour per label (Okabe-Ito, readable with the common colour-vision deficiencies), in LABELS order.
LABEL_COLORS: dict[str, str] = {
    "any": "#000000",
    "epidural": "#E69F00",
    "intraparenchymal": "#56B4E9",
    "intraventricular": "#009E73",
    "subarachnoid": "#CC79A7",
    "subdural": "#D55E00",
}
#: dvclive's folder names for the two sides of a Keras fit, and how the charts call them.
SPLIT_NAMES: dict[str, str] = {"train": "train", "eval": "validation"}
#: How :func:`calibration_bins` places its bins.
CALIBRATION_STRATEGIES: tuple[str, ...] = ("uniform", "quantile")
_SPLIT_COLORS = {"train": "#0072B2", "validation": "#D55E00"}
_CHART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DIGITS = 6  # rounding of the numbers inlined in specs: compact, and the same JSON on every platform
_BASE_CONFIG = {
    "background": "white",
    "font": "DejaVu Sans, Liberation Sans, Arial, sans-serif",
    "title": {"fontSize": 15, "anchor": "start", "offset": 10},
    "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridOpacity": 0.5},
    "legend": {"labelFontSize": 11, "titleFontSize": 12, "labelLimit": 320, "symbolStrokeWidth": 3},
    "header": {"labelFontSize": 12, "titleFontSize": 12},
    "view": {"stroke": "#bbbbbb"},
}


# --------------------------------------------------------------------------------------------- training
def read_training_curves(folder: str | os.PathLike) -> pd.DataFrame:
    """Read dvclive's per-epoch TSVs, ``<folder>/<network>/<train|eval>/<metric>.tsv``, into one long table.

    Each TSV has a ``step`` column and one named like the file (``loss.tsv`` -> ``loss``).

    Returns:
        Columns ``network``, ``split`` (``train`` or ``validation``, see :data:`SPLIT_NAMES`), ``metric``,
        ``step`` (int) and ``value`` (float), sorted by those columns in that order; empty (with those
        columns) when the folder holds no TSV.

    Raises:
        ValueError: if a TSV lacks its ``step`` or metric column, naming the file.
    """
    rows = []
    for path in sorted(Path(folder).glob("*/*/*.tsv")):
        metric, split, network = path.stem, path.parent.name, path.parent.parent.name
        table = pd.read_csv(path, sep="\t")
        if "step" not in table.columns or metric not in table.columns:
            raise ValueError(
                f"The dvclive file {path} must have the columns 'step' and {metric!r} (its own name). "
                f"Received: {list(table.columns)}. Is the folder dvclive's plots/metrics folder?"
            )
        rows.append(
            pd.DataFrame(
                {
                    "network": network,
                    "split": SPLIT_NAMES.get(split, split),
                    "metric": metric,
                    "step": table["step"].astype(int),
                    "value": table[metric].astype(float),
                }
            )
        )
    columns = ["network", "split", "metric", "step", "value"]
    if not rows:
        return pd.DataFrame({column: pd.Series(dtype=object if column in columns[:3] else float) for column in columns})
    return pd.concat(rows, ignore_index=True).sort_values(columns[:4], kind="stable").reset_index(drop=True)


def _metric_order(metric: str) -> tuple[int, int, str]:
    """Loss first, then AUC, then per-label AUCs in LABELS order, then anything else by name."""
    if metric == "loss":
        return (0, 0, metric)
    if metric == "auc":
        return (1, 0, metric)
    label = metric.removeprefix("auc_")
    if metric.startswith("auc_") and label in LABELS:
        return (2, LABELS.index(label), metric)
    return (3, 0, metric)


def _metric_title(metric: str) -> str:
    if metric == "loss":
        return "loss"
    if metric == "auc":
        return "AUC"
    if metric.startswith("auc_"):
        return f"AUC {metric.removeprefix('auc_')}"
    return metric


def training_spec(curves: pd.DataFrame, network: str, columns: int = 4) -> dict:
    """Train vs validation curves of one network: one small chart per metric, the two splits as two colours.

    Args:
        curves: the table of :func:`read_training_curves`.
        network: which network's curves (``stage1``, ``stage2``, ``model``...).
        columns: charts per row.

    Raises:
        ValueError: if ``curves`` holds nothing for ``network``, listing the networks it has.
    """
    own = curves[curves["network"] == network]
    if own.empty:
        raise ValueError(
            f"No training curves for network {network!r}. Networks present: {sorted(curves['network'].unique())}"
        )
    metrics = sorted(own["metric"].unique(), key=_metric_order)
    values = [
        {"split": row.split, "metric": row.metric, "epoch": int(row.step), "value": round(float(row.value), _DIGITS)}
        for row in own.itertuples(index=False)
        if math.isfinite(row.value)
    ]
    splits = [name for name in ("train", "validation") if name in set(own["split"])] + sorted(
        set(own["split"]) - {"train", "validation"}
    )
    color = {
        "field": "split",
        "type": "nominal",
        "title": None,
        "scale": {"domain": splits, "range": [_SPLIT_COLORS.get(name, "#777777") for name in splits]},
        "legend": {"orient": "top", "direction": "horizontal"},
    }
    charts = []
    for metric in metrics:
        title = _metric_title(metric)
        axis_title = "AUC" if metric.startswith("auc") else title
        charts.append(
            {
                "title": {"text": title, "fontSize": 13},
                "width": 230,
                "height": 150,
                "transform": [{"filter": {"field": "metric", "equal": metric}}],
                "mark": {"type": "line", "point": {"size": 25}, "strokeWidth": 2},
                "encoding": {
                    "x": {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"tickMinStep": 1, "format": "d"}},
                    "y": {"field": "value", "type": "quantitative", "title": axis_title, "scale": {"zero": False}},
                    "color": color,
                    "tooltip": [
                        {"field": "split", "type": "nominal"},
                        {"field": "epoch", "type": "quantitative"},
                        {"field": "value", "type": "quantitative", "title": title, "format": ".4f"},
                    ],
                },
            }
        )
    return {
        "title": {"text": f"Training curves: {network}", "subtitle": "train vs validation, per epoch"},
        "data": {"values": values},
        "concat": charts,
        "columns": min(columns, len(charts)),
        "resolve": {"scale": {"y": "independent", "x": "shared"}},
        "config": _BASE_CONFIG,
    }


def training_specs(curves: pd.DataFrame) -> dict[str, dict]:
    """``training_<network>`` -> :func:`training_spec` for every network in ``curves`` (sorted by name)."""
    return {f"training_{network}": training_spec(curves, network) for network in sorted(curves["network"].unique())}


# ---------------------------------------------------------------------------------------------- curves
def _check_predictions(y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    expected = (len(y_true), len(labels))
    if y_true.ndim != 2 or y_true.shape != y_prob.shape or y_true.shape[1] != len(labels) or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_prob must both have the shape (N, {len(labels)}) with N > 0, one column per label "
            f"({', '.join(labels)}). Received: {y_true.shape} and {y_prob.shape} (expected {expected})."
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (one column per label).")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob holds NaN or infinite values; every probability must be a finite number.")
    if y_prob.min() < 0 or y_prob.max() > 1:
        raise ValueError(f"y_prob must hold probabilities in [0, 1]. Received values from {y_prob.min()} to {y_prob.max()}.")
    return y_true.astype(int), y_prob


def _thin(count: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` indices into ``range(count)``, evenly spaced, always the first and the last."""
    if count <= max_points:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, max_points)).astype(int))


def _label_colors(series: Sequence[str], labels: Sequence[str]) -> dict:
    return {"domain": list(series), "range": [LABEL_COLORS.get(label, "#777777") for label in labels]}


def _finite_or_none(value: float) -> float | None:
    return round(float(value), _DIGITS) if math.isfinite(value) else None


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
    y_true, y_prob = _check_predictions(y_true, y_prob, labels)
    values, series = [], []
    for index, label in enumerate(labels):
        truth, scores = y_true[:, index], y_prob[:, index]
        if truth.min() == truth.max():
            series.append(f"{label}: no AUC (one class only)")
            continue
        name = f"{label} (AUC {roc_auc_score(truth, scores):.3f})"
        series.append(name)
        fpr, tpr, thresholds = roc_curve(truth, scores)
        for order, point in enumerate(_thin(len(fpr), max_points)):
            values.append(
                {
                    "label": label,
                    "series": name,
                    "order": order,
                    "fpr": round(float(fpr[point]), _DIGITS),
                    "tpr": round(float(tpr[point]), _DIGITS),
                    "threshold": _finite_or_none(thresholds[point]),
                }
            )
    scale = {"domain": [0, 1], "nice": False}
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
                    "x": {"field": "fpr", "type": "quantitative", "title": "false positive rate (1 - specificity)", "scale": scale},
                    "y": {"field": "tpr", "type": "quantitative", "title": "true positive rate (sensitivity)", "scale": scale},
                    "order": {"field": "order", "type": "quantitative"},
                    "color": {
                        "field": "series",
                        "type": "nominal",
                        "title": "label",
                        "scale": _label_colors(series, labels),
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
        "config": _BASE_CONFIG,
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
    y_true, y_prob = _check_predictions(y_true, y_prob, labels)
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
        points = distinct[_thin(len(distinct), max_points)]
        for order, point in enumerate(points):
            values.append(
                {
                    "label": label,
                    "series": name,
                    "order": len(points) - 1 - order,
                    "recall": round(float(recall[point]), _DIGITS),
                    "precision": round(float(precision[point]), _DIGITS),
                    "threshold": _finite_or_none(thresholds[point]) if point < len(thresholds) else None,
                }
            )
        baselines.append({"label": label, "series": name, "prevalence": round(prevalence, _DIGITS)})
    scale = {"domain": [0, 1], "nice": False}
    color = {"field": "series", "type": "nominal", "title": "label", "scale": _label_colors(series, labels), "legend": {"orient": "right"}}
    layers = [
        {
            "data": {"values": values},
            "mark": {"type": "line", "strokeWidth": 2, "interpolate": "step-before"},
            "encoding": {
                "x": {"field": "recall", "type": "quantitative", "title": "recall (sensitivity)", "scale": scale},
                "y": {"field": "precision", "type": "quantitative", "title": "precision (positive predictive value)", "scale": scale},
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
        "config": _BASE_CONFIG,
    }


# ----------------------------------------------------------------------------------------- calibration
def calibration_bins(y_true: np.ndarray, y_prob: np.ndarray, bins: int = 10, strategy: str = "uniform") -> pd.DataFrame:
    """Reliability table of one label: bins of the predicted probability, with the mean prediction, the
    observed share of positives and the count of each.

    Strategies (as ``sklearn.calibration.calibration_curve``, whose bins these are):

    - ``uniform``: ``bins`` equal-width bins of [0, 1]. At natural prevalence (most images near 0) this
      still shows the high-probability range, where the bins are small (see ``count``).
    - ``quantile``: edges at the ``0, 1/bins, ..., 1`` quantiles of ``y_prob`` (linear interpolation):
      bins of about equal counts. Ties never straddle bins: a value that fills several quantiles gets a
      bin of its own (``low == high``) and the bins it fills twice stay empty.

    Each bin holds ``low < p <= high``, the first one also ``p == low``.

    Args:
        y_true: ``(N,)`` 0/1.
        y_prob: ``(N,)`` probabilities in [0, 1].
        bins: the number of bins (before merging), >= 1.
        strategy: ``uniform`` or ``quantile``.

    Returns:
        One row per non-empty bin, in order: ``bin`` (0-based), ``low``, ``high`` (edges), ``mean_predicted``,
        ``observed`` (share of positives) and ``count``.
    """
    if bins < 1:
        raise ValueError(f"bins must be a positive integer. Received: {bins}")
    if strategy not in CALIBRATION_STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(CALIBRATION_STRATEGIES)}. Received: {strategy!r}")
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_prob = np.asarray(y_prob, dtype=np.float64).ravel()
    if len(y_true) != len(y_prob) or len(y_true) == 0:
        raise ValueError(f"y_true and y_prob must be two non-empty arrays of one length. Received: {len(y_true)} and {len(y_prob)}")
    if strategy == "quantile":
        edges = np.quantile(y_prob, np.linspace(0, 1, bins + 1))
    else:
        edges = np.linspace(0, 1, bins + 1)
    which = np.searchsorted(edges[1:-1], y_prob, side="left")
    rows = []
    for index in range(len(edges) - 1):
        members = which == index
        if not members.any():
            continue
        rows.append(
            {
                "bin": index,
                "low": float(edges[index]),
                "high": float(edges[index + 1]),
                "mean_predicted": float(y_prob[members].mean()),
                "observed": float(y_true[members].mean()),
                "count": int(members.sum()),
            }
        )
    return pd.DataFrame(rows, columns=["bin", "low", "high", "mean_predicted", "observed", "count"])


def calibration_spec(
    y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str] = LABELS, bins: int = 10, strategy: str = "uniform",
    columns: int = 3, title: str = "Calibration (reliability)",
) -> dict:
    """Per label, mean predicted probability vs observed frequency in bins, with the diagonal.

    One small chart per label (``columns`` per row); the count of images in each bin is in the tooltip
    and sets the size of its point. Arguments as :func:`roc_spec` and :func:`calibration_bins`.
    """
    y_true, y_prob = _check_predictions(y_true, y_prob, labels)
    values = []
    for index, label in enumerate(labels):
        table = calibration_bins(y_true[:, index], y_prob[:, index], bins, strategy)
        for row in table.itertuples(index=False):
            values.append(
                {
                    "label": label,
                    "bin": int(row.bin),
                    "low": round(row.low, _DIGITS),
                    "high": round(row.high, _DIGITS),
                    "mean_predicted": round(row.mean_predicted, _DIGITS),
                    "observed": round(row.observed, _DIGITS),
                    "count": int(row.count),
                }
            )
    scale = {"domain": [0, 1], "nice": False}
    x = {"field": "mean_predicted", "type": "quantitative", "title": "mean predicted probability", "scale": scale}
    y = {"field": "observed", "type": "quantitative", "title": "observed frequency", "scale": scale}
    color = {
        "field": "label",
        "type": "nominal",
        "title": "label",
        "scale": {"domain": list(labels), "range": [LABEL_COLORS.get(label, "#777777") for label in labels]},
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
        "title": {"text": title, "subtitle": f"{len(y_true)} images, {bins} {'equal-width' if strategy == 'uniform' else 'quantile'} bins per label "
        "(point size: images in the bin); dashed: perfect calibration"},
        "data": {"values": values},
        "facet": {"field": "label", "type": "nominal", "sort": list(labels), "title": None},
        "columns": columns,
        "spec": {
            "width": 220,
            "height": 220,
            "layer": [
                {
                    "mark": {"type": "rule", "color": "#999999", "strokeDash": [5, 5], "strokeWidth": 1},
                    "encoding": {"x": {"datum": 0, "scale": scale}, "y": {"datum": 0, "scale": scale}, "x2": {"datum": 1}, "y2": {"datum": 1}},
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
                        "size": {"field": "count", "type": "quantitative", "title": "images in bin", "scale": {"range": [20, 160]}, "legend": None},
                        "tooltip": tooltip,
                    },
                },
            ],
        },
        "config": _BASE_CONFIG,
    }


# ---------------------------------------------------------------------------------------------- output
def render_png(spec: Mapping, scale: float = 2.0) -> bytes:
    """Draw a Vega-Lite spec to PNG bytes with vl-convert (no browser, no network).

    ``scale`` multiplies the pixel size (2 gives a crisp image on high-density screens and in print).
    """
    return vl_convert.vegalite_to_png(dict(spec), scale=scale, allowed_base_urls=[])


def _png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("Expected PNG bytes (the PNG signature is missing).")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _format_number(value: object, digits: int = 3) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape(str(value))
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}" if math.isfinite(value) else "undefined"


def _format_interval(interval: object) -> str:
    if isinstance(interval, Sequence) and not isinstance(interval, str) and len(interval) == 2:
        return f"{_format_number(interval[0])} – {_format_number(interval[1])}"
    return "undefined" if interval is None else "–"


def _summary_tables(summary: Mapping) -> str:
    """HTML tables of the headline metrics of an ``evaluate.json``-shaped mapping."""
    columns = [("positives", "positives"), ("auc", "AUC"), ("auc_ci95", "AUC 95% CI"), ("precision", "precision"),
               ("recall", "recall"), ("f1", "F1"), ("threshold", "threshold")]
    rows = [label for label in LABELS if isinstance(summary.get(label), Mapping)]
    present = [(key, name) for key, name in columns if any(key in summary[label] for label in rows)]
    parts = []
    if rows and present:
        header = "".join(f"<th>{html.escape(name)}</th>" for _, name in present)
        body = []
        for label in rows:
            cells = []
            for key, _ in present:
                value = summary[label].get(key, "–")
                cells.append(f"<td>{_format_interval(value) if key.endswith('_ci95') else _format_number(value)}</td>")
            body.append(f"<tr><th scope=\"row\">{html.escape(label)}</th>{''.join(cells)}</tr>")
        parts.append(f"<table><thead><tr><th>label</th>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    overall = []
    if "weighted_log_loss" in summary:
        interval = summary.get("weighted_log_loss_ci95")
        text = _format_number(summary["weighted_log_loss"], 4)
        if interval is not None:
            text += f" (95% CI {_format_interval(interval)})"
        overall.append(("weighted log loss (any ×2, subtypes ×1)", text))
    if "mean_subtype_auc" in summary:
        overall.append(("mean subtype AUC", _format_number(summary["mean_subtype_auc"])))
    by_model = summary.get("by_model")
    if isinstance(by_model, Mapping):
        for model, metrics in sorted(by_model.items()):
            if isinstance(metrics, Mapping):
                overall.append((f"{model}: weighted log loss", _format_number(metrics.get("weighted_log_loss"), 4)))
                overall.append((f"{model}: mean subtype AUC", _format_number(metrics.get("mean_subtype_auc"))))
    if overall:
        body = "".join(f"<tr><th scope=\"row\">{html.escape(name)}</th><td>{value}</td></tr>" for name, value in overall)
        parts.append(f"<table class=\"overall\"><tbody>{body}</tbody></table>")
    return "\n".join(parts)


_CSS = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.95em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th[scope=row], thead th:first-child { text-align: left; }
thead th { background: #f3f3f3; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5em 2.5em; align-items: flex-start; }
figure { margin: 0.5em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #666; font-size: 0.85em; }
""".strip()


def report_html(images: Mapping[str, bytes], title: str, summary: Mapping | None = None, scale: float = 2.0) -> str:
    """The self-contained HTML page: ``title``, the summary tables, and every PNG embedded as a data URI.

    ``images`` maps chart names to PNG bytes drawn at ``scale``; they are shown at their size in CSS pixels
    (pixel size / ``scale``), in the mapping's order. No external file, script, font or URL.
    """
    sections = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        sections.append("<h2>Headline metrics</h2>")
        sections.append(_summary_tables(summary))
    if images:
        sections.append("<h2>Charts</h2>\n<div class=\"charts\">")
    for name, png in images.items():
        width, height = _png_size(png)
        encoded = base64.b64encode(png).decode("ascii")
        sections.append(
            f"<figure id=\"{html.escape(name)}\"><img alt=\"{html.escape(name)}\" width=\"{round(width / scale)}\" "
            f"height=\"{round(height / scale)}\" src=\"data:image/png;base64,{encoded}\">"
            f"<figcaption>{html.escape(name)}.png</figcaption></figure>"
        )
    if images:
        sections.append("</div>")
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
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
