"""Training curves: dvclive's per-epoch TSVs read into one table, and one Vega-Lite chart per network."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from ich.core.labels import LABELS
from ich.reports.charts.base import BASE_CONFIG, OTHER_COLOR, rounded

__all__ = ["SPLIT_NAMES", "read_training_curves", "training_spec", "training_specs"]

#: dvclive's folder names for the two sides of a Keras fit, and how the charts call them.
SPLIT_NAMES: dict[str, str] = {"train": "train", "eval": "validation"}
_SPLIT_COLORS = {"train": "#0072B2", "validation": "#D55E00"}


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
        raise ValueError(f"No training curves for network {network!r}. Networks present: {sorted(curves['network'].unique())}")
    metrics = sorted(own["metric"].unique(), key=_metric_order)
    values = [
        {"split": row.split, "metric": row.metric, "epoch": int(row.step), "value": rounded(row.value)}
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
        "scale": {"domain": splits, "range": [_SPLIT_COLORS.get(name, OTHER_COLOR) for name in splits]},
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
        "config": BASE_CONFIG,
    }


def training_specs(curves: pd.DataFrame) -> dict[str, dict]:
    """``training_<network>`` -> :func:`training_spec` for every network in ``curves`` (sorted by name)."""
    return {f"training_{network}": training_spec(curves, network) for network in sorted(curves["network"].unique())}
