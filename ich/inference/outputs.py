"""The tables of an ``ich predict`` run (see :mod:`ich.inference.cli` for the folder they go to): per-slice and
per-series probabilities, Kaggle's submission and the quarantine, each written atomically.

Key slices: per series and label, the ``k`` slices with the highest probability of the label (``--key-slices``),
highest first; ties go to the lower z, then to the lower image ID (slices without a position last), so the same
predictions always give the same key slices. ``series.csv`` holds them in two columns per label:

- ``<label>_key_slices``: the image IDs, separated by single spaces (IDs never hold one: they are RSNA IDs or
  DICOM UIDs), e.g. ``ID_0a1 ID_77c ID_3f0``;
- ``<label>_key_z``: their z positions in mm, in the same order, separated by spaces (``nan`` where a slice has
  no position), e.g. ``42.5 37.5 47.5``.

Split both on whitespace to read them back: the n-th ID lies at the n-th z. A series with fewer than ``k``
slices lists all of them. With ``--key-slices 0`` the columns are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ich.core.files import write_csv
from ich.core.labels import LABELS, RSNA_ROW_ORDER
from ich.inference.ood import OOD_COLUMN, SCORE_COLUMNS
from ich.inference.predict import Prediction

__all__ = [
    "OUTPUT_FILES",
    "SR_FOLDER",
    "key_slice_order",
    "key_slices_table",
    "series_table",
    "with_ood",
    "submission_table",
    "write_outputs",
]

#: The files a run writes in its output folder (besides ``explanations/``).
OUTPUT_FILES: tuple[str, ...] = ("slices.csv", "series.csv", "submission.csv", "quarantine.csv", "report.html", "summary.json")
#: The subfolder of ``--dicom-sr``'s reports (:mod:`ich.inference.dicom_sr`).
SR_FOLDER = "sr"


def key_slice_order(slices: pd.DataFrame, label: str) -> pd.DataFrame:
    """``slices`` (with ``ID``, ``position_z`` and ``label``) sorted as key slices are chosen: probability of
    ``label`` high to low, then z low to high (no position last), then image ID."""
    return slices.sort_values([label, "position_z", "ID"], ascending=[False, True, True], kind="mergesort", na_position="last")


def key_slices_table(slices: pd.DataFrame, key_slices: int) -> pd.DataFrame:
    """Per series (in order of first appearance) and label, the ``key_slices`` slices of highest probability
    (:func:`key_slice_order`): ``SeriesInstanceUID``, ``<label>_key_slices`` and ``<label>_key_z`` as the module
    docstring describes. Holds one sorted copy of the ``ID``/``position_z``/label columns at a time."""
    if key_slices < 0:
        raise ValueError(f"key_slices must be 0 or more. Received: {key_slices}")
    series = pd.unique(slices["SeriesInstanceUID"])
    table = pd.DataFrame({"SeriesInstanceUID": series})
    for label in LABELS:
        chosen = key_slice_order(slices[["SeriesInstanceUID", "ID", "position_z", label]], label)
        chosen = chosen.groupby("SeriesInstanceUID", sort=False).head(key_slices)
        groups = chosen.groupby("SeriesInstanceUID", sort=False)
        ids = groups["ID"].agg(lambda values: " ".join(str(value) for value in values))
        z = groups["position_z"].agg(lambda values: " ".join(str(float(value)) for value in values))
        table[f"{label}_key_slices"] = ids.reindex(series, fill_value="").to_numpy()
        table[f"{label}_key_z"] = z.reindex(series, fill_value="").to_numpy()
    return table


def series_table(slices: pd.DataFrame, thresholds: dict[str, float], key_slices: int = 0) -> pd.DataFrame:
    """One row per series (in order of first appearance): ``SeriesInstanceUID``, ``slices``, and per label the
    series score ``<label>`` (the highest probability of its slices) and ``<label>_flagged`` (how many of its
    slices reach ``thresholds[label]``); with ``key_slices`` > 0 (``slices`` then needs ``ID`` and
    ``position_z``), the key-slice columns of :func:`key_slices_table` after them."""
    groups = slices.groupby("SeriesInstanceUID", sort=False)
    table = pd.DataFrame({"SeriesInstanceUID": list(groups.groups), "slices": groups.size().to_numpy()})
    for label in LABELS:
        table[label] = groups[label].max().to_numpy()
        table[f"{label}_flagged"] = (
            groups[label].apply(lambda values, cut=thresholds[label]: int((values >= cut).sum())).to_numpy()
        )
    if key_slices > 0:
        keys = key_slices_table(slices, key_slices)
        table = pd.concat([table, keys.drop(columns="SeriesInstanceUID")], axis=1)
    return table


def submission_table(slices: pd.DataFrame) -> pd.DataFrame:
    """Kaggle's ``ID,Label``: ``<ID>_<label>`` and its probability, six rows per image in RSNA's row order."""
    ids = np.repeat(slices["ID"].to_numpy(dtype=object), len(RSNA_ROW_ORDER))
    labels = np.tile(np.array(RSNA_ROW_ORDER, dtype=object), len(slices))
    values = slices[list(RSNA_ROW_ORDER)].to_numpy(dtype=np.float64).reshape(-1)
    return pd.DataFrame({"ID": ids + "_" + labels, "Label": values})


def with_ood(table: pd.DataFrame, ood: pd.DataFrame | None, columns: tuple[str, ...] = SCORE_COLUMNS[1:]) -> pd.DataFrame:
    """``table`` (with ``SeriesInstanceUID``, row order kept) with the ``columns`` of its series' out-of-distribution
    scores (:func:`ich.inference.ood.score_series`) at the end; unchanged when ``ood`` is ``None`` (no statistics)."""
    if ood is None:
        return table
    scores = ood.drop_duplicates("SeriesInstanceUID").set_index("SeriesInstanceUID")
    joined = table.copy()
    for column in columns:
        joined[column] = scores[column].reindex(table["SeriesInstanceUID"]).to_numpy()
    return joined


def write_outputs(out: Path, prediction: Prediction, thresholds: dict[str, float], key_slices: int = 0) -> pd.DataFrame:
    """``slices.csv``, ``series.csv`` (with ``key_slices`` key slices per label), ``submission.csv`` and
    ``quarantine.csv`` (see :mod:`ich.inference.cli`); returns the series table. When the model has
    out-of-distribution statistics, ``series.csv`` ends with ``ood_distance``, ``ood_intensity_z`` and
    ``out_of_distribution``, and ``slices.csv`` with its series' ``out_of_distribution``."""
    slices = prediction.slices
    columns = ["ID", "SeriesInstanceUID", "position_z", *LABELS]
    if prediction.sequence:
        columns += [f"cnn_{label}" for label in LABELS]
    series = with_ood(series_table(slices, thresholds, key_slices), prediction.ood)
    write_csv(with_ood(slices[[*columns, "file"]], prediction.ood, (OOD_COLUMN,)), out / "slices.csv")
    write_csv(series, out / "series.csv")
    write_csv(submission_table(slices), out / "submission.csv")
    write_csv(prediction.quarantine, out / "quarantine.csv")
    return series
