"""Image IDs (``ID_`` + lowercase hex) and the only way an ID becomes a path.

Only validated IDs are ever turned into file names, so no label row, header value or file name can name a
path outside the data folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["ID_PATTERN", "AUGMENTED_ID_PATTERN", "is_valid_id", "validate_id", "image_path"]

ID_PATTERN = re.compile(r"ID_[0-9a-f]+")
#: IDs of augmented copies: the source ID, ``_aug`` and a counter (``ID_12cadc6af_aug3``).
AUGMENTED_ID_PATTERN = re.compile(r"ID_[0-9a-f]+_aug[0-9]+")
_MAX_ID_LENGTH = 64


def is_valid_id(image_id: object, augmented: bool = False) -> bool:
    """True when ``image_id`` is an RSNA image ID: ``ID_`` followed by lowercase hex digits.

    With ``augmented=True`` the IDs of augmented copies (:data:`AUGMENTED_ID_PATTERN`) pass too.
    """
    if not isinstance(image_id, str) or len(image_id) > _MAX_ID_LENGTH:
        return False
    if ID_PATTERN.fullmatch(image_id):
        return True
    return augmented and AUGMENTED_ID_PATTERN.fullmatch(image_id) is not None


def validate_id(image_id: object, augmented: bool = False) -> str:
    """Return ``image_id`` unchanged if valid, else raise ``ValueError`` saying what was expected.

    Only validated IDs are ever turned into file names, so no label row can name a path outside the
    data folders (``../``, absolute paths, NUL bytes, unicode look-alikes all fail the pattern).
    """
    if not is_valid_id(image_id, augmented=augmented):
        raise ValueError(
            f"Image IDs must match 'ID_' followed by lowercase hex digits (at most {_MAX_ID_LENGTH} "
            f"characters). Received: {image_id!r}"
        )
    return image_id  # type: ignore[return-value]


def image_path(folder: str | os.PathLike, image_id: str, suffix: str, augmented: bool = False) -> Path:
    """``folder / (image_id + suffix)`` for a validated ID (with ``augmented``, the IDs of augmented copies too);
    raises ``ValueError`` for anything else.

    The ID patterns admit only ``ID_``, hex digits and ``_aug`` with digits, so the result is always a direct child
    of ``folder``.
    """
    return Path(folder) / f"{validate_id(image_id, augmented)}{suffix}"
