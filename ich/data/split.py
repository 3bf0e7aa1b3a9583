"""Patient-grouped, multi-label-stratified train/val/test split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ich.core.labels import LABELS

__all__ = ["SPLITS", "UNUSED", "patient_groups", "grouped_stratified_split", "cap_series", "assign_splits", "split_summary"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: The split of held-out images left out by a cap on the number of validation or test series.
UNUSED = "unused"


def grouped_stratified_split(
    frame: pd.DataFrame,
    fractions: Sequence[float],
    seed: int,
    group_column: str = "PatientID",
    labels: Sequence[str] = LABELS,
) -> pd.Series:
    """Assign every row to a split so that no group (patient) spans two splits.

    Greedy iterative stratification over groups (after Sechidis et al., 2011): groups are placed rarest
    label first; each goes to the split that is relatively furthest below its target for the rarest label
    the group carries (so even a label seen in a handful of patients reaches every split), ties broken
    by how far each split is below its target image count, then by a seeded shuffle. Label-free groups
    fill the image counts. The result depends only on the data and ``seed``.

    Args:
        frame: one row per image with ``group_column`` and 0/1 ``labels`` columns.
        fractions: target share of images per split, in :data:`SPLITS` order; sums to 1.
        seed: tie-breaking seed.

    Returns:
        A Series aligned with ``frame`` holding ``"train"``, ``"val"`` or ``"test"``.
    """
    fractions_array = np.asarray(fractions, dtype=float)
    if len(fractions_array) != len(SPLITS) or abs(fractions_array.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be {len(SPLITS)} numbers summing to 1. Received: {list(fractions)}")
    groups = frame[group_column].astype(str)
    per_group = frame[list(labels)].astype(np.int64).groupby(groups.to_numpy()).sum()
    per_group.insert(0, "_images", groups.value_counts().reindex(per_group.index).to_numpy())
    # Deterministic order: sort group keys, shuffle by seed, then rarest-label groups first.
    rng = np.random.default_rng(seed)
    per_group = per_group.sort_index()
    per_group = per_group.iloc[rng.permutation(len(per_group))]
    counts = per_group.to_numpy(dtype=float)  # (groups, 1 + labels)
    totals = counts.sum(axis=0)
    rarity = np.where(counts[:, 1:] > 0, totals[1:], np.inf).min(axis=1)
    order = np.lexsort((-counts[:, 0], rarity))

    targets = fractions_array[:, None] * totals[None, :]  # (splits, 1 + labels)
    current = np.zeros_like(targets)
    open_split = fractions_array > 0
    assignment = np.empty(len(per_group), dtype=np.int64)
    for index in order:
        group_counts = counts[index]
        relative_deficit = (targets - current) / np.maximum(targets, 1e-9)
        carried = np.flatnonzero(group_counts[1:] > 0) + 1
        primary = relative_deficit[:, carried[np.argmin(totals[carried])]] if len(carried) else np.zeros(len(SPLITS))
        score = primary + 1e-3 * relative_deficit[:, 0]
        score[~open_split] = -np.inf  # a split with a zero target never receives anything
        best = int(np.argmax(score))
        assignment[index] = best
        current[best] += group_counts
    mapping = dict(zip(per_group.index, np.asarray(SPLITS)[assignment]))
    return groups.map(mapping).rename("split")


def patient_groups(frame: pd.DataFrame) -> pd.Series:
    """The group of each image for the split: its ``PatientID``; without one, its series (never the single
    image, whose neighbours would land in other splits); without either, the image itself."""
    patient = frame["PatientID"].fillna("").astype(str)
    series = frame["SeriesInstanceUID"].fillna("").astype(str)
    return patient.where(patient != "", ("series:" + series).where(series != "", "image:" + frame["ID"].astype(str)))


def cap_series(frame: pd.DataFrame, max_series: int | None, seed: int, series_column: str = "SeriesInstanceUID") -> pd.Index:
    """The index of the rows of at most ``max_series`` whole series of ``frame``, chosen uniformly at random
    (never by label); ``None`` keeps every row."""
    series = np.sort(frame[series_column].astype(str).unique())
    if max_series is None or len(series) <= max_series:
        return frame.index
    kept = np.random.default_rng(seed).choice(series, size=max_series, replace=False)
    return frame.index[frame[series_column].astype(str).isin(kept).to_numpy()]


def assign_splits(
    index: pd.DataFrame,
    fractions: Sequence[float],
    seed: int,
    max_val_series: int | None = None,
    max_test_series: int | None = None,
) -> pd.Series:
    """Every indexed image's split, before any sampling: patients go whole to train, val or test
    (:func:`grouped_stratified_split` over all six labels), so val and test hold whole series at the
    prevalence of the data. A cap on val or test series keeps that many series, chosen at random by
    ``seed``; the rest of those patients' images are :data:`UNUSED` (never trained on).

    Args:
        index: one row per image: ``ID``, ``PatientID``, ``SeriesInstanceUID`` and the label columns.

    Returns:
        A Series aligned with ``index``: ``train``, ``val``, ``test`` or ``unused``.
    """
    frame = index.assign(_group=patient_groups(index).to_numpy())
    assignment = grouped_stratified_split(frame, fractions, seed, group_column="_group").astype(object)
    for offset, (name, cap) in enumerate((("val", max_val_series), ("test", max_test_series))):
        held_out = frame[assignment.to_numpy() == name]
        kept = cap_series(held_out, cap, seed + 1 + offset)
        assignment[held_out.index.difference(kept)] = UNUSED
    return assignment.rename("split")


def split_summary(frame: pd.DataFrame, split: pd.Series, labels: Sequence[str] = LABELS) -> dict[str, dict[str, object]]:
    """Per split: images, patients, series, positives and prevalence per label (for the stage's metrics)."""
    summary: dict[str, dict[str, object]] = {}
    for name in (*SPLITS, UNUSED):
        part = frame[split.to_numpy() == name]
        if name == UNUSED and part.empty:
            continue
        summary[name] = {
            "images": int(len(part)),
            "patients": int(part["PatientID"].nunique()),
            "series": int(part["SeriesInstanceUID"].nunique()),
            **{f"positive_{label}": int(part[label].sum()) for label in labels},
            "prevalence": {label: round(float(part[label].mean()), 4) if len(part) else None for label in labels},
        }
    return summary
