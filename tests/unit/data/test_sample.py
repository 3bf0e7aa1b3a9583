"""Sampling by whole series from the training patients; held-out series kept whole."""

from __future__ import annotations

import pandas as pd
import pytest

from ich.core.labels import LABELS
from ich.data.sample import sample_series, select_images


def _series(name: str, patient: str, split: str, labels_per_slice: list[set[str]]) -> list[dict]:
    rows = []
    for position, labels in enumerate(labels_per_slice):
        row = {"ID": f"ID_{name}{position:02x}", "PatientID": patient, "SeriesInstanceUID": name, "split": split}
        row.update({label: int(label in labels or (label == "any" and bool(labels))) for label in LABELS})
        rows.append(row)
    return rows


def _frame() -> pd.DataFrame:
    rows = []
    rows += _series("a1", "p1", "train", [set(), {"epidural"}, {"epidural"}, set()])  # 2 epidural slices
    rows += _series("a2", "p2", "train", [{"subdural"}, {"subdural"}, {"subdural"}])
    rows += _series("a3", "p3", "train", [set(), {"subdural", "subarachnoid"}, set()])
    rows += _series("a4", "p4", "train", [set()] * 5)  # clean
    rows += _series("a5", "p5", "train", [set()] * 3)  # clean
    rows += _series("b1", "p6", "val", [set(), {"epidural"}, set()])
    rows += _series("c1", "p7", "test", [{"intraventricular"}, set(), set(), set()])
    rows += _series("c2", "p8", "test", [set()] * 2)
    return pd.DataFrame(rows)


def test_whole_series_are_chosen_until_each_label_has_enough_slices():
    train = _frame().query("split == 'train'")
    chosen = sample_series(train, per_label=2, seed=0)
    series = set(chosen["SeriesInstanceUID"])
    # epidural (2 slices) only in a1; subarachnoid only in a3; subdural reaches 2 with a2 or a3 (a3 is in anyway)
    assert {"a1", "a3"} <= series
    for name in series:  # every chosen series is complete
        assert (chosen["SeriesInstanceUID"] == name).sum() == (train["SeriesInstanceUID"] == name).sum()
    # clean series are added until they hold >= 2 slices: exactly one of a4 (5) / a5 (3)
    assert len(series & {"a4", "a5"}) == 1
    assert sample_series(train, per_label=2, seed=0).equals(chosen)  # seeded


def test_a_label_with_too_few_positives_keeps_all_its_series():
    train = _frame().query("split == 'train'")
    chosen = sample_series(train, per_label=50, seed=3)
    assert set(chosen["SeriesInstanceUID"]) == {"a1", "a2", "a3", "a4", "a5"}


@pytest.mark.parametrize("per_label,seed", [(1, 0), (2, 5), (9, 1)])
def test_natural_holdout_is_every_held_out_image_whatever_the_sampling(per_label, seed):
    frame = _frame()
    selected = select_images(frame, per_label, seed, holdout="natural")
    for name in ("val", "test"):
        assert sorted(selected.loc[selected["split"] == name, "ID"]) == sorted(frame.loc[frame["split"] == name, "ID"])
    assert selected["ID"].is_monotonic_increasing


def test_enriched_holdout_samples_held_out_slices_per_label():
    frame = _frame()
    selected = select_images(frame, per_label=1, seed=0, holdout="enriched")
    test = selected[selected["split"] == "test"]
    # one intraventricular slice and one hemorrhage-free slice of the test patients' 6
    assert len(test) == 2 and test["intraventricular"].sum() == 1
    with pytest.raises(ValueError, match="natural, enriched.*'balanced'"):
        select_images(frame, 1, 0, holdout="balanced")
