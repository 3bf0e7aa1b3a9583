"""Slice order along z, the 2.5D neighbour gather at series edges, and the composition, checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ich.data.context import compose_context, neighbour_ids, neighbour_indices, series_order, series_runs


def test_slices_are_ordered_by_z_not_by_id_or_row_and_series_keep_their_first_appearance():
    series = ["s2", "s1", "s2", "s1", "s2"]
    z = [30.0, -5.0, 10.0, 12.5, 20.0]
    ids = ["ID_a", "ID_b", "ID_c", "ID_d", "ID_e"]
    order = series_order(series, z, ids)
    assert order.tolist() == [2, 4, 0, 1, 3]  # s2: z 10, 20, 30; then s1: z -5, 12.5
    assert [run.tolist() for run in series_runs(series, order)] == [[2, 4, 0], [1, 3]]


def test_ties_go_by_id_and_unknown_positions_come_last():
    series = ["s"] * 5
    z = [5.0, None, 1.0, 5.0, float("nan")]
    ids = ["ID_ff", "ID_02", "ID_10", "ID_0a", "ID_01"]
    # z 1 (row 2); the tie at z 5 by ID: ID_0a (row 3) before ID_ff (row 0); unknowns by ID: ID_01 (4), ID_02 (1)
    assert series_order(series, z, ids).tolist() == [2, 3, 0, 4, 1]
    # without IDs ties keep their row order
    assert series_order(series, z).tolist() == [2, 0, 3, 1, 4]


def test_neighbours_at_series_edges_replicate_the_nearest_slice():
    # one series of four slices given in scrambled row order, and a series of one slice
    series = ["a", "a", "b", "a", "a"]
    z = [3.0, 1.0, 0.0, 4.0, 2.0]  # a in z order: rows 1, 4, 0, 3
    before, after = neighbour_indices(series, z, 1)
    assert before.tolist() == [4, 1, 2, 0, 1]
    assert after.tolist() == [3, 4, 2, 3, 0]
    before, after = neighbour_indices(series, z, 2)
    assert before.tolist() == [1, 1, 2, 4, 1]  # row 0 (3rd in z) -> 1st; row 3 (4th) -> 2nd (row 4)
    assert after.tolist() == [3, 0, 2, 3, 3]
    before, after = neighbour_indices(series, z, 0)
    assert before.tolist() == after.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        neighbour_indices(series, z, -1)


def test_neighbour_ids_of_a_table():
    frame = pd.DataFrame({"ID": ["ID_1", "ID_2", "ID_3"], "SeriesInstanceUID": ["s", "s", "s"], "position_z": [2.0, 1.0, 3.0]})
    before, after = neighbour_ids(frame, 1)
    assert before.tolist() == ["ID_2", "ID_2", "ID_1"]
    assert after.tolist() == ["ID_3", "ID_1", "ID_3"]


def test_composition_takes_red_from_the_slice_green_from_before_and_blue_from_after():
    images = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    for index in range(3):
        for channel in range(3):
            images[index, ..., channel] = 10 * index + channel  # slice i, channel c -> 10 i + c
    composed = compose_context(images, np.array([0, 0, 1]), np.array([1, 2, 2]))
    assert composed[:, 0, 0].tolist() == [[0, 1, 12], [10, 1, 22], [20, 11, 22]]
    assert composed.dtype == np.uint8
    # the identity when the neighbours are the slices themselves (k = 0, augmented copies)
    np.testing.assert_array_equal(compose_context(images, np.arange(3), np.arange(3)), images)
