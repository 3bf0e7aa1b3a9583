"""The tables of an ``ich predict`` run (see :mod:`ich.inference.cli` for the folder they go to): per-slice and
per-series probabilities, Kaggle's submission and the quarantine, each written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ich.core.files import write_csv
from ich.core.labels import LABELS, RSNA_ROW_ORDER
from ich.inference.predict import Prediction

__all__ = ["OUTPUT_FILES", "series_table", "submission_table", "write_outputs"]

#: The files a run writes in its output folder (besides ``explanations/``).
OUTPUT_FILES: tuple[str, ...] = ("slices.csv", "series.csv", "submission.csv", "quarantine.csv", "report.html", "summary.json")


def series_table(slices: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """One row per series (in order of first appearance): ``SeriesInstanceUID``, ``slices``, and per label the
    series score ``<label>`` (the highest probability of its slices) and ``<label>_flagged`` (how many of its
    slices reach ``thresholds[label]``)."""
    groups = slices.groupby("SeriesInstanceUID", sort=False)
    table = pd.DataFrame({"SeriesInstanceUID": list(groups.groups), "slices": groups.size().to_numpy()})
    for label in LABELS:
        table[label] = groups[label].max().to_numpy()
        table[f"{label}_flagged"] = (
            groups[label].apply(lambda values, cut=thresholds[label]: int((values >= cut).sum())).to_numpy()
        )
    return table


def submission_table(slices: pd.DataFrame) -> pd.DataFrame:
    """Kaggle's ``ID,Label``: ``<ID>_<label>`` and its probability, six rows per image in RSNA's row order."""
    ids = np.repeat(slices["ID"].to_numpy(dtype=object), len(RSNA_ROW_ORDER))
    labels = np.tile(np.array(RSNA_ROW_ORDER, dtype=object), len(slices))
    values = slices[list(RSNA_ROW_ORDER)].to_numpy(dtype=np.float64).reshape(-1)
    return pd.DataFrame({"ID": ids + "_" + labels, "Label": values})


def write_outputs(out: Path, prediction: Prediction, thresholds: dict[str, float]) -> pd.DataFrame:
    """``slices.csv``, ``series.csv``, ``submission.csv`` and ``quarantine.csv`` (see :mod:`ich.inference.cli`);
    returns the series table."""
    slices = prediction.slices
    columns = ["ID", "SeriesInstanceUID", "position_z", *LABELS]
    if prediction.sequence:
        columns += [f"cnn_{label}" for label in LABELS]
    series = series_table(slices, thresholds)
    write_csv(slices[[*columns, "file"]], out / "slices.csv")
    write_csv(series, out / "series.csv")
    write_csv(submission_table(slices), out / "submission.csv")
    write_csv(prediction.quarantine, out / "quarantine.csv")
    return series
