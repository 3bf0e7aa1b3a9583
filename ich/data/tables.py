"""The tables the data stages pass along: columns of ``data/index.csv`` (and ``data/sampled.csv``) and their reader.

Kept apart from the index stage's DICOM scan, so the split and sample stages depend on these columns only.
"""

from __future__ import annotations

import os

import pandas as pd

from ich.core.labels import LABELS

__all__ = ["INDEX_COLUMNS", "TABLE_COLUMNS", "read_index"]

#: Header fields kept of every slice (``data/index.csv``). Identifying tags (names, dates, institution) never are.
INDEX_COLUMNS: tuple[str, ...] = (
    "ID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "position_z",
    "rows",
    "columns",
)
#: Columns of ``data/index.csv``: the image, its labels, and its header fields (:data:`INDEX_COLUMNS`).
TABLE_COLUMNS: tuple[str, ...] = ("ID", *LABELS, *INDEX_COLUMNS[1:])
_TEXT_COLUMNS = ("ID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "split")


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``data/index.csv`` (or a table with its columns, such as ``data/sampled.csv``): identifiers as
    text (empty when absent, never NaN), ``position_z`` as float (NaN when unknown)."""
    header = pd.read_csv(path, nrows=0).columns
    dtypes = {column: str for column in _TEXT_COLUMNS if column in header}
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={"position_z": [""]})
    return frame
