"""Keyed pseudonyms for the identifying columns of ``data/metadata.csv`` (``preprocess.pseudonymize_ids``)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from ich.core.errors import PipelineError

__all__ = [
    "PSEUDONYMIZED_COLUMNS",
    "PSEUDONYM_KEY_ENV",
    "MIN_KEY_LENGTH",
    "PseudonymKeyError",
    "pseudonym",
    "pseudonym_key",
]

#: Metadata columns replaced by :func:`pseudonym` when ``preprocess.pseudonymize_ids`` is on.
PSEUDONYMIZED_COLUMNS: tuple[str, ...] = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")
#: Environment variable holding the secret key of the pseudonyms (never stored in the repository).
PSEUDONYM_KEY_ENV = "ICH_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 16


class PseudonymKeyError(PipelineError, ValueError):
    """Pseudonyms are asked for but the environment holds no usable key; the message says how to set one."""


def pseudonym(value: str, key: bytes) -> str:
    """A stable, non-reversible stand-in for an identifier: ``"P" + HMAC-SHA256(key, value)[:24 hex]``.

    Keyed, so nobody without the key can test guesses of a PatientID (an MRN has few digits); stable,
    so the same patient keeps one group in the split. Empty values stay empty (no identifier to hide).
    """
    if not value:
        return ""
    return "P" + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def pseudonym_key(enabled: bool, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The secret key of the pseudonyms from ``environ`` (default: the process environment), or None when off.

    Raises:
        PseudonymKeyError: pseudonyms are on and ``ICH_PSEUDONYM_KEY`` is missing or shorter than
            ``MIN_KEY_LENGTH`` characters.
    """
    if not enabled:
        return None
    key = (os.environ if environ is None else environ).get(PSEUDONYM_KEY_ENV, "")
    if len(key) < MIN_KEY_LENGTH:
        raise PseudonymKeyError(
            f"`preprocess.pseudonymize_ids` is on, so the environment variable {PSEUDONYM_KEY_ENV} must hold a "
            f"secret of at least {MIN_KEY_LENGTH} characters (received {len(key)}; e.g. `export "
            f"{PSEUDONYM_KEY_ENV}=$(openssl rand -hex 32)`). Keep it outside the repository; the same key gives "
            f"the same pseudonyms."
        )
    return key.encode("utf-8")
