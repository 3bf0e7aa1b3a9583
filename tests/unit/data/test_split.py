import numpy as np
import pandas as pd
import pytest

from ich.core.labels import LABELS, SUBTYPES
from ich.data.split import grouped_stratified_split


def _frame(seed=0, patients=120):
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(patients):
        bleed = rng.choice(["none", *SUBTYPES], p=[0.5, 0.04, 0.12, 0.1, 0.12, 0.12])
        for index in range(int(rng.integers(5, 15))):
            labels = {label: 0 for label in LABELS}
            if bleed != "none" and index % 2:
                labels[bleed] = labels["any"] = 1
            rows.append({"ID": f"ID_{patient:03x}{index:02x}", "PatientID": f"P{patient}", **labels})
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits_and_sizes_follow_fractions():
    frame = _frame()
    split = grouped_stratified_split(frame, (0.8, 0.1, 0.1), seed=3)
    assert split.groupby(frame["PatientID"]).nunique().max() == 1
    shares = split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.04)
    assert shares["val"] == pytest.approx(0.1, abs=0.04)
    assert shares["test"] == pytest.approx(0.1, abs=0.04)


def test_every_label_reaches_every_split():
    frame = _frame(seed=1, patients=150)
    split = grouped_stratified_split(frame, (0.8, 0.1, 0.1), seed=3)
    for label in LABELS:
        if frame.loc[frame[label] == 1, "PatientID"].nunique() < 3:
            continue  # a label seen in fewer than 3 patients cannot reach 3 splits
        per_split = frame.loc[frame[label] == 1].groupby(split[frame[label] == 1]).size()
        assert set(per_split.index) == {"train", "val", "test"}, label
    positives = frame["any"].groupby(split).mean()
    assert positives.max() - positives.min() < 0.15


def test_deterministic_by_seed_and_order_independent():
    frame = _frame()
    first = grouped_stratified_split(frame, (0.8, 0.1, 0.1), seed=7)
    shuffled = frame.sample(frac=1, random_state=1)
    again = grouped_stratified_split(shuffled, (0.8, 0.1, 0.1), seed=7)
    pd.testing.assert_series_equal(first, again.loc[first.index])
    assert not first.equals(grouped_stratified_split(frame, (0.8, 0.1, 0.1), seed=8))


def test_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="summing to 1"):
        grouped_stratified_split(_frame(patients=5), (0.5, 0.1, 0.1), seed=0)


def _index():
    rows = []
    for patient in range(40):
        for series in range(1 + patient % 2):  # every second patient has two series
            for position in range(4):
                labels = {label: 0 for label in LABELS}
                if patient % 5 == 0 and position in (1, 2):
                    labels["any"] = labels[
                        ("subdural", "epidural", "subarachnoid", "intraventricular", "intraparenchymal")[patient % 4]
                    ] = 1
                rows.append(
                    {
                        "ID": f"ID_{patient:02x}{series}{position}",
                        "PatientID": f"P{patient}" if patient < 38 else "",
                        "SeriesInstanceUID": f"S{patient}.{series}",
                        **labels,
                    }
                )
    return pd.DataFrame(rows)


def test_assignment_keeps_patients_whole_and_caps_held_out_series():
    from ich.data.split import UNUSED, assign_splits, patient_groups

    index = _index()
    split = assign_splits(index, (0.6, 0.2, 0.2), seed=1)
    groups = patient_groups(index)
    assert (groups.groupby(split.to_numpy()).apply(set).pipe(lambda sets: sum(len(s) for s in sets))) == groups.nunique()
    assert groups[index["PatientID"] == ""].str.startswith("series:").all()  # no PatientID: grouped by series
    capped = assign_splits(index, (0.6, 0.2, 0.2), seed=1, max_val_series=3, max_test_series=2)
    assert index.loc[capped.to_numpy() == "val", "SeriesInstanceUID"].nunique() == 3
    assert index.loc[capped.to_numpy() == "test", "SeriesInstanceUID"].nunique() == 2
    # the cap only removes held-out series, whole; training is untouched
    assert ((capped == "train") == (split == "train")).all()
    dropped = index[(capped == UNUSED).to_numpy()]
    assert set(split[dropped.index]) <= {"val", "test"}
    kept_series = set(index.loc[capped.isin(["val", "test"]).to_numpy(), "SeriesInstanceUID"])
    assert not kept_series & set(dropped["SeriesInstanceUID"])
