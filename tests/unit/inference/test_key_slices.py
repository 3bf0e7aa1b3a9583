"""Key slices of ``series.csv``: per series and label the k slices of highest probability, ties broken by z then
ID, on a table small enough that every expected value is written out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ich.core.labels import LABELS
from ich.inference.outputs import key_slices_table, series_table

THRESHOLDS = {label: 0.5 for label in LABELS}


def _slices() -> pd.DataFrame:
    """Series s2 (four slices, one without a position) then s1 (one slice); P(any) has two ties at 0.9 and 0.5,
    epidural a four-way tie at 0.3 with two slices at the same z."""
    slices = pd.DataFrame(
        {
            "ID": ["ID_0a", "ID_0b", "ID_0c", "ID_0d", "ID_0e"],
            "SeriesInstanceUID": ["s2", "s2", "s2", "s2", "s1"],
            "position_z": [10.0, 5.0, 0.0, math.nan, 1.0],
            **{label: [0.0, 0.0, 0.0, 0.0, 0.0] for label in LABELS},
        }
    )
    slices["any"] = [0.5, 0.9, 0.5, 0.9, 0.2]
    slices["epidural"] = [0.3, 0.3, 0.3, 0.3, 0.7]
    slices.loc[2, "position_z"] = 5.0  # ID_0c shares ID_0b's z for the epidural tie
    slices["subdural"] = [0.1, 0.2, 0.3, 0.4, 0.6]
    return slices


def test_key_slices_by_hand():
    table = series_table(_slices(), THRESHOLDS, key_slices=3)
    assert table["SeriesInstanceUID"].tolist() == ["s2", "s1"]
    # any in s2: 0.9 twice (ID_0b at z 5 before ID_0d without a position), then 0.5 twice (ID_0c at z 5 before
    # ID_0a at z 10); three kept
    assert table["any_key_slices"].tolist() == ["ID_0b ID_0d ID_0c", "ID_0e"]
    assert table["any_key_z"].tolist() == ["5.0 nan 5.0", "1.0"]
    # epidural in s2: all 0.3; z 5 (ID_0b, ID_0c by ID), then z 10 (ID_0a); ID_0d (no z) is fourth
    assert table["epidural_key_slices"].tolist() == ["ID_0b ID_0c ID_0a", "ID_0e"]
    assert table["epidural_key_z"].tolist() == ["5.0 5.0 10.0", "1.0"]
    assert table["subdural_key_slices"].tolist() == ["ID_0d ID_0c ID_0b", "ID_0e"]
    # the series figures are unchanged by the key slices
    assert table["any"].tolist() == [0.9, 0.2] and table["any_flagged"].tolist() == [4, 0]
    columns = list(table.columns)
    assert columns[: 2 + 2 * len(LABELS)] == list(series_table(_slices(), THRESHOLDS).columns)
    assert columns[2 + 2 * len(LABELS) :] == [f"{label}_key_{kind}" for label in LABELS for kind in ("slices", "z")]


def test_one_key_slice_more_than_the_series_has_and_none():
    one = key_slices_table(_slices(), 1)
    assert one["any_key_slices"].tolist() == ["ID_0b", "ID_0e"] and one["epidural_key_z"].tolist() == ["5.0", "1.0"]
    many = key_slices_table(_slices(), 10)
    assert many["any_key_slices"].tolist() == ["ID_0b ID_0d ID_0c ID_0a", "ID_0e"]
    none = series_table(_slices(), THRESHOLDS, key_slices=0)
    assert not [column for column in none.columns if "_key_" in column]
    with pytest.raises(ValueError, match="key_slices must be 0 or more. Received: -1"):
        key_slices_table(_slices(), -1)


def test_key_slices_do_not_depend_on_row_order():
    shuffled = _slices().sample(frac=1.0, random_state=7)
    expected = key_slices_table(_slices(), 3).set_index("SeriesInstanceUID").sort_index()
    got = key_slices_table(shuffled, 3).set_index("SeriesInstanceUID").sort_index()
    pd.testing.assert_frame_equal(got, expected)


def test_the_written_columns_read_back_into_ids_and_z(tmp_path):
    path = tmp_path / "series.csv"
    series_table(_slices(), THRESHOLDS, key_slices=3).to_csv(path, index=False)
    back = pd.read_csv(path, dtype={"any_key_slices": str, "any_key_z": str})
    ids, z = back.loc[0, "any_key_slices"].split(), [float(value) for value in back.loc[0, "any_key_z"].split()]
    assert ids == ["ID_0b", "ID_0d", "ID_0c"] and z[0] == 5.0 and math.isnan(z[1]) and z[2] == 5.0
