"""Reading the RSNA long-format labels CSV (``ID,Label``, six rows per image) into the wide table.

The reader is vectorised over fixed-width byte rows, so the 4.5 M rows of ``stage_2_train.csv`` parse in a few
seconds; every row it cannot use is reported with a reason, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from ich.core.errors import PipelineError
from ich.core.ids import _MAX_ID_LENGTH, ID_PATTERN
from ich.core.labels import LABELS

__all__ = ["LabelsCsvError", "ParsedLabels", "parse_long_csv"]


class LabelsCsvError(PipelineError, ValueError):
    """The labels CSV cannot be used at all (wrong header, empty, unreadable)."""


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
    ``rejected`` and left out; exact duplicate rows are dropped silently but counted. Fields are
    stripped of surrounding whitespace before they are checked.

    Rejected rows come in this order: malformed rows in file order, conflicting images in the order
    they first appear, then images with missing rows and images whose ``any`` disagrees, each by ID.

    Raises:
        LabelsCsvError: if the file is empty, has no rows under its header, or its header is not
            ``ID,Label``.
    """
    frame = _read_long_csv(path)
    rows_total = len(frame)
    raw_ids = frame["raw_id"].to_numpy(dtype=object)
    lengths = frame["raw_id"].str.len().fillna(-1).to_numpy(dtype=np.int64)
    keys, label_codes = _decode_rows(raw_ids, lengths)
    values = frame["value"].eq("1").to_numpy(dtype=np.int8)
    # Everything outside the bulk form (padding, malformed, long IDs, non-ASCII) follows the row rules.
    slow = np.flatnonzero((keys < 0) | ~frame["value"].isin(("0", "1")).to_numpy())
    checked = _check_rows(frame["raw_id"].iloc[slow], frame["value"].iloc[slow])
    del frame, raw_ids

    bad_rows = checked["reason"].to_numpy() != ""
    rejected = [pd.DataFrame({"ID": checked["raw_id"][bad_rows], "reason": checked["reason"][bad_rows]})]
    valid = np.ones(rows_total, dtype=bool)
    valid[slow[bad_rows]] = False
    passed = checked[~bad_rows]
    rebuilt = passed["image_id"] + "_" + passed["label"]
    slow_keys, _ = _decode_rows(rebuilt.to_numpy(dtype=object), rebuilt.str.len().to_numpy(dtype=np.int64))
    slow_valid = slow[~bad_rows]
    keys[slow_valid] = slow_keys
    label_codes[slow_valid] = pd.Categorical(passed["label"], categories=LABELS).codes
    values[slow_valid] = passed["value"].to_numpy(dtype=object) == "1"
    # IDs with more hex digits than a key holds: found by their text, placed among the others by order.
    long_ids = passed["image_id"].to_numpy(dtype=object)[slow_keys < 0]
    long_rows = slow_valid[slow_keys < 0]

    keyed = valid & (keys >= 0)
    image_ids, key_codes, long_codes = _image_codes(keys[keyed], long_ids)
    row_codes = np.empty(rows_total, dtype=np.int64)
    row_codes[keyed] = key_codes
    row_codes[long_rows] = long_codes
    row_codes, label_codes, values = row_codes[valid], label_codes[valid], values[valid]

    # One cell per (image, label, value): presence tells duplicates, conflicts and missing rows apart.
    image_count, label_count = len(image_ids), len(LABELS)
    cells = np.bincount((row_codes * label_count + label_codes) * 2 + values, minlength=image_count * label_count * 2)
    seen = cells.reshape(image_count, label_count, 2) > 0
    exact_duplicates = len(row_codes) - int(np.count_nonzero(seen))

    conflicting_cells = seen[:, :, 0] & seen[:, :, 1]
    conflicting = cast(np.ndarray, conflicting_cells.any(axis=1))  # axis= gives an array
    conflicting_rows = conflicting_cells[row_codes, label_codes]
    conflicting_codes = pd.unique(row_codes[conflicting_rows])  # first appearance in the file
    if len(conflicting_codes):
        rejected.append(
            pd.DataFrame({"ID": image_ids[conflicting_codes], "reason": "conflicting duplicate rows (same label, 0 and 1)"})
        )

    missing = ~seen.any(axis=2) & ~conflicting[:, None]
    incomplete = missing.any(axis=1)
    if incomplete.any():
        bits = missing[incomplete] @ (1 << np.arange(label_count))
        rejected.append(pd.DataFrame({"ID": image_ids[incomplete], "reason": _MISSING_REASONS[bits]}))

    wide_values = seen[:, :, 1].astype(np.int8)
    complete = ~conflicting & ~incomplete
    any_from_subtypes = wide_values[:, 1:].max(axis=1)
    inconsistent = complete & (wide_values[:, 0] != any_from_subtypes)
    if inconsistent.any():
        rejected.append(
            pd.DataFrame(
                {
                    "ID": image_ids[inconsistent],
                    "reason": "'any' disagrees with the subtypes (any must be 1 exactly when a subtype is)",
                }
            )
        )
    keep = complete & ~inconsistent
    wide = pd.DataFrame(
        {"ID": pd.array(image_ids[keep], dtype="str")} | {label: wide_values[keep, column] for column, label in enumerate(LABELS)}
    )

    rejected_frame = pd.concat(rejected, ignore_index=True).astype({"ID": str, "reason": str})
    counts = {
        "rows_total": int(rows_total),
        "rows_malformed": int(bad_rows.sum()),
        "rows_exact_duplicates": int(exact_duplicates),
        "images_conflicting": int(len(conflicting_codes)),
        "images_incomplete": int(incomplete.sum()),
        "images_inconsistent_any": int(inconsistent.sum()),
        "images_valid": int(keep.sum()),
    }
    return ParsedLabels(wide=wide, rejected=rejected_frame, counts=counts)


def _read_long_csv(path: str) -> pd.DataFrame:
    """Read the CSV as text into columns ``raw_id`` and ``value``; raise on an unusable file."""
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
    if frame.empty:
        raise LabelsCsvError(
            f"The labels CSV {path!r} has the header 'ID,Label' but no rows. Expected six rows per "
            "image. Check `data.labels_csv` in params.yaml."
        )
    frame.columns = ["raw_id", "value"]
    return frame


# The bulk path decodes rows of exactly the form ID_<1..15 hex digits>_<label> as bytes, without a Python
# object per field: an image becomes an int64 key (its hex digits + 1 in base 17, zero-padded on the right,
# which sorts like the ID text because 17**15 < 2**63), a label its index in LABELS.
_KEY_HEX_DIGITS = 15
_PREFIX = b"ID_"
_TAILS = tuple(f"_{label}".encode() for label in LABELS)  # no label's "_<label>" ends another's
_BULK_LENGTH = len(_PREFIX) + _KEY_HEX_DIGITS + max(len(tail) for tail in _TAILS)  # 35 characters
_ROW_BYTES = 40  # _BULK_LENGTH rounded up to whole 8-byte words
_TAIL_WORDS = 3  # the last 24 bytes of a right-justified row hold the longest "_<label>"
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_VALUE = np.full(256, 16, dtype=np.uint8)  # 16: not a lowercase hex digit
_HEX_VALUE[_HEX_DIGITS] = np.arange(16, dtype=np.uint8)
_KEY_WEIGHTS = 17 ** np.arange(_KEY_HEX_DIGITS - 1, -1, -1, dtype=np.int64)
_KEY_CHARACTERS = np.concatenate([[0], _HEX_DIGITS]).astype(np.uint8)  # key digit -> byte (0: past the end)
_CHUNK_ROWS = 1 << 18  # bounds the temporary byte matrices to a few tens of MB
_MISSING_REASONS = np.array(
    [
        "missing label rows: " + ", ".join(label for bit, label in enumerate(LABELS) if mask >> bit & 1)
        for mask in range(1 << len(LABELS))
    ],
    dtype=object,
)


def _tail_words(tail: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``tail`` right-justified in :data:`_TAIL_WORDS` words, and the mask of its bytes, as uint64."""
    width = 8 * _TAIL_WORDS
    pattern = np.zeros(width, dtype=np.uint8)
    mask = np.zeros(width, dtype=np.uint8)
    pattern[width - len(tail) :] = np.frombuffer(tail, dtype=np.uint8)
    mask[width - len(tail) :] = 0xFF
    return pattern.view(np.uint64), mask.view(np.uint64)


_TAIL_PATTERNS = tuple(_tail_words(tail) for tail in _TAILS)


def _decode_rows(raw_ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keys and label codes of raw IDs in the bulk form; key -1 for every other row.

    Args:
        raw_ids: object array of the raw ``ID`` fields (str, or NaN).
        lengths: their lengths in characters (-1 for a missing field).

    Returns:
        ``(keys, label_codes)``: int64 keys (see :data:`_KEY_WEIGHTS`) and int8 indexes into
        :data:`LABELS`, both -1 where the row is not of the form ``ID_<1..15 hex>_<label>``.
    """
    keys = np.full(len(raw_ids), -1, dtype=np.int64)
    label_codes = np.full(len(raw_ids), -1, dtype=np.int8)
    for start in range(0, len(raw_ids), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(raw_ids))
        keys[start:stop], label_codes[start:stop] = _decode_chunk(raw_ids[start:stop], lengths[start:stop])
    return keys, label_codes


def _decode_chunk(raw_ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = len(raw_ids)
    try:
        encoded = raw_ids.astype(f"S{_ROW_BYTES}")  # longer fields are cut, then fail the length check
    except UnicodeEncodeError:
        ascii_only = pd.Series(raw_ids, dtype="str").str.isascii().fillna(False).to_numpy(dtype=bool)
        encoded = np.where(ascii_only, raw_ids, "").astype(f"S{_ROW_BYTES}")
    # A fixed-width bytes array drops trailing NULs: the length check also catches "ID_1_any\x00".
    bulk = (np.strings.str_len(encoded) == lengths) & (lengths <= _BULK_LENGTH)
    tails = np.strings.rjust(encoded, _ROW_BYTES).view(np.uint64).reshape(count, -1)[:, -_TAIL_WORDS:]
    label_codes = np.full(count, -1, dtype=np.int8)
    tail_lengths = np.zeros(count, dtype=np.int64)
    for code, (pattern, mask) in enumerate(_TAIL_PATTERNS):
        match = (tails[:, 0] & mask[0]) == pattern[0]
        for word in range(1, _TAIL_WORDS):
            match &= (tails[:, word] & mask[word]) == pattern[word]
        label_codes[match] = code
        tail_lengths[match] = len(_TAILS[code])
    hex_lengths = lengths - len(_PREFIX) - tail_lengths
    bulk &= (label_codes >= 0) & (hex_lengths >= 1) & (hex_lengths <= _KEY_HEX_DIGITS)
    matrix = encoded.view(np.uint8).reshape(count, _ROW_BYTES)
    for position, character in enumerate(_PREFIX):
        bulk &= matrix[:, position] == character
    inside = np.arange(_KEY_HEX_DIGITS) < hex_lengths[:, None]
    digits = (np.take(_HEX_VALUE, matrix[:, len(_PREFIX) : len(_PREFIX) + _KEY_HEX_DIGITS]) + 1) * inside
    bulk &= digits.max(axis=1) <= 16  # 17: a character inside the ID that is not a hex digit
    keys = np.zeros(count, dtype=np.int64)
    for position in range(_KEY_HEX_DIGITS):
        keys *= 17
        keys += digits[:, position]
    keys[~bulk] = -1
    label_codes[~bulk] = -1
    return keys, label_codes


def _key_texts(keys: np.ndarray) -> np.ndarray:
    """The IDs (object array of str) of sorted unique keys: the inverse of :func:`_decode_chunk`'s key."""
    characters = np.zeros((len(keys), len(_PREFIX) + _KEY_HEX_DIGITS), dtype=np.uint8)
    characters[:, : len(_PREFIX)] = np.frombuffer(_PREFIX, dtype=np.uint8)
    for position, weight in enumerate(_KEY_WEIGHTS):
        characters[:, len(_PREFIX) + position] = _KEY_CHARACTERS[(keys // weight) % 17]
    return characters.view(f"S{characters.shape[1]}").ravel().astype(str).astype(object)


def _image_codes(keys: np.ndarray, long_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted unique IDs of rows given by key and of rows given by text, and each row's index into them.

    Returns:
        ``(image_ids, key_codes, long_codes)``: an object array of str, sorted like Python sorts str, and
        int64 indexes into it, one per entry of ``keys`` and of ``long_ids``.
    """
    key_codes, unique_keys = pd.factorize(keys, sort=True)
    texts = _key_texts(unique_keys)
    if not len(long_ids):
        return texts, key_codes.astype(np.int64), np.empty(0, dtype=np.int64)
    long_unique, long_codes = np.unique(long_ids.astype(object), return_inverse=True)
    # A long ID never equals a keyed one: slot each in among the keyed IDs by text order.
    slots = np.searchsorted(texts, long_unique)
    shifts = np.searchsorted(slots, np.arange(len(texts)), side="right")
    image_ids = np.insert(texts, slots, long_unique)
    return image_ids, key_codes + shifts[key_codes], (slots + np.arange(len(slots)))[long_codes]


def _check_rows(raw_id: pd.Series, value: pd.Series) -> pd.DataFrame:
    """The rules for rows outside the bulk form: stripped fields, the split ID and a reason ("" if usable)."""
    raw_id = raw_id.str.strip()
    value = value.str.strip()
    if raw_id.empty:
        image_id, label = raw_id.copy(), raw_id.copy()
    else:
        image_id, _, label = _split_raw_ids(raw_id)
    id_ok = image_id.str.fullmatch(ID_PATTERN.pattern) & (image_id.str.len() <= _MAX_ID_LENGTH)
    label_ok = label.isin(LABELS)
    value_ok = value.isin(("0", "1"))
    reasons = pd.Series("", index=raw_id.index, dtype=object)
    reasons[~value_ok] = "label value is not 0 or 1"
    reasons[~label_ok] = "unknown label name (expected one of " + ", ".join(LABELS) + ")"
    reasons[~id_ok] = "image ID does not match ID_<hex>"
    return pd.DataFrame({"raw_id": raw_id, "image_id": image_id, "label": label, "value": value, "reason": reasons})


def _split_raw_ids(raw_id: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Split ``ID_abc_epidural`` at its last underscore into (``ID_abc``, ``_``, ``epidural``)."""
    parts = raw_id.str.rpartition("_")
    return parts[0], parts[1], parts[2]
