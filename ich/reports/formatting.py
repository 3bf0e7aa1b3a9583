"""How the pages write numbers and embed bytes: one formatter per kind of number, the same on every page.

Every formatter writes a missing value (``None``, NaN, an infinity, or an interval without both ends) as
:data:`MISSING`. They are the jinja2 filters of :mod:`ich.reports.templating`, under the names of
:data:`FORMATTERS`.
"""

from __future__ import annotations

import base64
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "MISSING",
    "DIGITS",
    "FORMATTERS",
    "probability",
    "metric",
    "loss",
    "count",
    "millimetres",
    "interval",
    "formatted",
    "data_uri",
]

#: What a missing number reads as, on every page.
MISSING = "–"
#: Digits after the decimal point, per kind of number.
DIGITS: dict[str, int] = {"probability": 3, "metric": 3, "loss": 4, "millimetres": 1}


def _fixed(value: object, digits: int) -> str:
    """``value`` with ``digits`` decimals; :data:`MISSING` when missing; text other than a number as it is."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    number = float(value)
    return f"{number:.{digits}f}" if math.isfinite(number) else MISSING


def probability(value: object) -> str:
    """A probability or threshold in [0, 1]: ``0.123``."""
    return _fixed(value, DIGITS["probability"])


def metric(value: object) -> str:
    """A score such as AUC, precision, recall or F1: ``0.957``."""
    return _fixed(value, DIGITS["metric"])


def loss(value: object) -> str:
    """A (weighted) log loss, whose differences are small: ``0.0812``."""
    return _fixed(value, DIGITS["loss"])


def millimetres(value: object) -> str:
    """A position or distance in mm: ``-12.5``."""
    return _fixed(value, DIGITS["millimetres"])


def count(value: object) -> str:
    """A count of images, series or files: ``40`` (an integral float too; other numbers as :func:`metric`)."""
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and float(value).is_integer()
    ):
        return str(int(float(value)))
    return metric(value)


def interval(value: object, kind: str = "metric") -> str:
    """A confidence interval ``(low, high)`` as ``[low, high]``, both ends formatted as ``kind``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) != 2:
        return MISSING
    ends = [FORMATTERS[kind](end) for end in value]
    return MISSING if MISSING in ends else f"[{ends[0]}, {ends[1]}]"


#: Kind of number -> its formatter (the jinja2 filter of the same name).
FORMATTERS: dict[str, Callable[[object], str]] = {
    "probability": probability,
    "metric": metric,
    "loss": loss,
    "millimetres": millimetres,
    "count": count,
    "interval": interval,
}


def formatted(value: object, kind: str) -> str:
    """``value`` written as the kind of number ``kind`` names (a key of :data:`FORMATTERS`).

    Raises:
        ValueError: on an unknown kind, listing the kinds.
    """
    if kind not in FORMATTERS:
        raise ValueError(f"kind must be one of {', '.join(FORMATTERS)}. Received: {kind!r}")
    return FORMATTERS[kind](value)


def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``: bytes (a PNG, a JPEG) embedded in the page, so it loads nothing."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
