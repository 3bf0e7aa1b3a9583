"""RSNA 2019 label handling: IDs, long-format CSV parsing, the wide table, balanced sampling.

The RSNA ``stage_2_train.csv`` is "long": two columns ``ID,Label`` and six rows per image, whose ``ID`` is
``<image ID>_<label>`` (``ID_12cadc6af_epidural``). Everything downstream works on a "wide" table with one
row per image: column ``ID`` and one 0/1 column per label in :data:`LABELS` order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ich.errors import PipelineError

__all__ = [
    "ANY",
    "SUBTYPES",
    "LABELS",
    "RSNA_ROW_ORDER",
    "ID_PATTERN",
    "AUGMENTED_ID_PATTERN",
    "LabelsCsvError",
    "ParsedLabels",
    "is_valid_id",
    "validate_id",
    "parse_long_csv",
    "sample_balanced",
]

ANY = "any"
SUBTYPES: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
#: Column order of every wide table, prediction file and metrics object: ``any`` first.
LABELS: tuple[str, ...] = (ANY, *SUBTYPES)
#: Order of the six rows per image in the RSNA CSV.
RSNA_ROW_ORDER: tuple[str, ...] = (*SUBTYPES, ANY)

ID_PATTERN = re.compile(r"ID_[0-9a-f]+")
#: IDs of augmented copies: the source ID, ``_aug`` and a counter (``ID_12cadc6af_aug3``).
AUGMENTED_ID_PATTERN = re.compile(r"ID_[0-9a-f]+_aug[0-9]+")
_MAX_ID_LENGTH = 64


class LabelsCsvError(PipelineError, ValueError):
    """The labels CSV cannot be used at all (wrong header, empty, unreadable)."""


def is_valid_id(image_id: object, augmented: bool = False) -> bool:
    """True when ``image_id`` is an RSNA image ID: ``ID_`` followed by lowercase hex digits.

    With ``augmented=True`` the IDs of augmented copies (:data:`AUGMENTED_ID_PATTERN`) pass too.
    """
    if not isinstance(image_id, str) or len(image_id) > _MAX_ID_LENGTH:
        return False
    if ID_PATTERN.fullmatch(image_id):
        return True
    return augmented and AUGMENTED_ID_PATTERN.fullmatch(image_id) is not None


def validate_id(image_id: object) -> str:
    """Return ``image_id`` unchanged if valid, else raise ``ValueError`` saying what was expected.

    Only validated IDs are ever turned into file names, so no label row can name a path outside the
    data folders (``../``, absolute paths, NUL bytes, unicode look-alikes all fail the pattern).
    """
    if not is_valid_id(image_id):
        raise ValueError(
            f"Image IDs must match 'ID_' followed by lowercase hex digits (at most {_MAX_ID_LENGTH} "
            f"characters). Received: {image_id!r}"
        )
    return image_id  # type: ignore[return-value]


@dataclass(frozen=True)
class ParsedLabels:
    """Result of :func:`parse_long_csv`.

    Attributes:
        wide: one row per usable image; columns ``ID`` then :data:`LABELS` (int8 0/1), sorted by ID.
        rejected: one row per problem; columns ``ID`` (the raw text), ``reason``.
        counts: summary numbers for the stage's metrics.
    """

    wide: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]


def parse_long_csv(path: str) -> ParsedLabels:
    """Parse an RSNA long-format labels CSV into the wide table, reporting every bad row.

    Malformed rows (bad ID, unknown label, a value other than 0/1), conflicting duplicates, images with
    missing label rows and images whose ``any`` disagrees with their subtypes are reported in
    ``rejected`` and left out; exact duplicate rows are dropped silently but counted.

    Raises:
        LabelsCsvError: if the file is empty or its header is not ``ID,Label``.
    """
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=True,
            encoding="utf-8",
            encoding_errors="replace",
        )
    except pd.errors.EmptyDataError as error:
        raise LabelsCsvError(
            f"The labels CSV {path!r} is empty. Expected the RSNA layout: a header 'ID,Label' and six "
            "rows per image. Check `data.labels_csv` in params.yaml."
        ) from error
    columns = [str(column).strip().lstrip("\ufeff") for column in frame.columns]
    if columns != ["ID", "Label"]:
        raise LabelsCsvError(
            f"The labels CSV {path!r} must have the header 'ID,Label' (the RSNA stage_2_train.csv "
            f"layout). Received columns: {columns}. Check `data.labels_csv` in params.yaml."
        )
    frame.columns = ["raw_id", "value"]
    rows_total = len(frame)
    raw_id = frame["raw_id"].str.strip()
    value = frame["value"].str.strip()

    image_id, _, label = _split_raw_ids(raw_id)
    id_ok = image_id.str.fullmatch(ID_PATTERN.pattern) & (image_id.str.len() <= _MAX_ID_LENGTH)
    label_ok = label.isin(LABELS)
    value_ok = value.isin(("0", "1"))

    reasons = pd.Series("", index=frame.index, dtype=object)
    reasons[~value_ok] = "label value is not 0 or 1"
    reasons[~label_ok] = "unknown label name (expected one of " + ", ".join(LABELS) + ")"
    reasons[~id_ok] = "image ID does not match ID_<hex>"
    bad_rows = reasons != ""
    rejected = [pd.DataFrame({"ID": raw_id[bad_rows], "reason": reasons[bad_rows]})]

    good = pd.DataFrame(
        {
            "ID": image_id[~bad_rows],
            "label": label[~bad_rows],
            "value": value[~bad_rows].astype(np.int8),
        }
    )
    rows_valid = len(good)
    good = good.drop_duplicates()
    exact_duplicates = rows_valid - len(good)

    conflicting = good.duplicated(["ID", "label"], keep=False)
    conflicting_ids = pd.unique(good.loc[conflicting, "ID"])
    if len(conflicting_ids):
        rejected.append(
            pd.DataFrame(
                {"ID": conflicting_ids, "reason": "conflicting duplicate rows (same label, 0 and 1)"}
            )
        )
        good = good[~good["ID"].isin(conflicting_ids)]

    wide = good.pivot(index="ID", columns="label", values="value")
    wide = wide.reindex(columns=list(LABELS))
    incomplete = wide.isna().any(axis=1)
    if incomplete.any():
        missing = wide[incomplete].isna()
        reasons_missing = missing.apply(
            lambda row: "missing label rows: " + ", ".join(row.index[row.to_numpy()]), axis=1
        )
        rejected.append(pd.DataFrame({"ID": reasons_missing.index, "reason": reasons_missing.values}))
        wide = wide[~incomplete]
    wide = wide.astype(np.int8)

    any_from_subtypes = wide[list(SUBTYPES)].max(axis=1)
    inconsistent = wide[ANY] != any_from_subtypes
    if inconsistent.any():
        rejected.append(
            pd.DataFrame(
                {
                    "ID": wide.index[inconsistent],
                    "reason": "'any' disagrees with the subtypes (any must be 1 exactly when a subtype is)",
                }
            )
        )
        wide = wide[~inconsistent]

    wide = wide.sort_index().reset_index()
    wide.columns.name = None
    rejected_frame = pd.concat(rejected, ignore_index=True).astype({"ID": str, "reason": str})
    counts = {
        "rows_total": int(rows_total),
        "rows_malformed": int(bad_rows.sum()),
        "rows_exact_duplicates": int(exact_duplicates),
        "images_conflicting": int(len(conflicting_ids)),
        "images_incomplete": int(incomplete.sum()),
        "images_inconsistent_any": int(inconsistent.sum()),
        "images_valid": int(len(wide)),
    }
    return ParsedLabels(wide=wide, rejected=rejected_frame, counts=counts)


def _split_raw_ids(raw_id: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Split ``ID_abc_epidural`` at its last underscore into (``ID_abc``, ``_``, ``epidural``)."""
    parts = raw_id.str.rpartition("_")
    return parts[0], parts[1], parts[2]


def sample_balanced(wide: pd.DataFrame, per_label: int, seed: int) -> pd.DataFrame:
    """Pick about ``per_label`` images for each subtype and ``per_label`` hemorrhage-free images.

    Subtypes are filled rarest first; an image already picked for one subtype counts for every label it
    carries, so a rare label is never crowded out and the total stays near ``6 * per_label`` (the seed's
    10,000 per label gives ~55 k images on RSNA). A label with fewer positives than ``per_label`` keeps
    all of them. ``any`` positives are the union of the subtype picks.

    Args:
        wide: the wide table (``ID`` + :data:`LABELS`).
        per_label: target images per label, > 0.
        seed: seed of the random choice; the same inputs and seed give the same sample.

    Returns:
        The sampled rows of ``wide``, sorted by ``ID``.
    """
    if per_label <= 0:
        raise ValueError(f"`sample.per_label` must be a positive integer. Received: {per_label}")
    rng = np.random.default_rng(seed)
    wide = wide.sort_values("ID").reset_index(drop=True)
    chosen = np.zeros(len(wide), dtype=bool)
    positives = {label: wide[label].to_numpy() == 1 for label in SUBTYPES}
    for label in sorted(SUBTYPES, key=lambda name: (positives[name].sum(), name)):
        already = int((chosen & positives[label]).sum())
        candidates = np.flatnonzero(positives[label] & ~chosen)
        take = min(max(per_label - already, 0), len(candidates))
        chosen[rng.choice(candidates, size=take, replace=False)] = True
    negatives = np.flatnonzero(wide[ANY].to_numpy() == 0)
    chosen[rng.choice(negatives, size=min(per_label, len(negatives)), replace=False)] = True
    return wide[chosen].reset_index(drop=True)
