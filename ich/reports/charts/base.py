"""What every chart shares: the label colours, the base Vega-Lite config, input checks and the PNG renderer."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence

import numpy as np
import vl_convert

__all__ = ["LABEL_COLORS", "BASE_CONFIG", "DIGITS", "render_png", "png_size"]

#: One colour per label (Okabe-Ito, readable with the common colour-vision deficiencies), in LABELS order.
LABEL_COLORS: dict[str, str] = {
    "any": "#000000",
    "epidural": "#E69F00",
    "intraparenchymal": "#56B4E9",
    "intraventricular": "#009E73",
    "subarachnoid": "#CC79A7",
    "subdural": "#D55E00",
}
#: Colour of a series without its own colour.
OTHER_COLOR = "#777777"
#: Rounding of the numbers inlined in specs: compact, and the same JSON on every platform.
DIGITS = 6
#: The Vega-Lite ``config`` of every chart: one font, white background, the same axis and legend sizes.
BASE_CONFIG: dict[str, object] = {
    "background": "white",
    "font": "DejaVu Sans, Liberation Sans, Arial, sans-serif",
    "title": {"fontSize": 15, "anchor": "start", "offset": 10},
    "axis": {"labelFontSize": 11, "titleFontSize": 12, "gridOpacity": 0.5},
    "legend": {"labelFontSize": 11, "titleFontSize": 12, "labelLimit": 320, "symbolStrokeWidth": 3},
    "header": {"labelFontSize": 12, "titleFontSize": 12},
    "view": {"stroke": "#bbbbbb"},
}
#: Both axes of a probability chart: exactly [0, 1].
UNIT_SCALE: dict[str, object] = {"domain": [0, 1], "nice": False}


def rounded(value: float) -> float:
    """``value`` rounded to :data:`DIGITS` digits, as a plain ``float``."""
    return round(float(value), DIGITS)


def finite_or_none(value: float) -> float | None:
    """:func:`rounded`, or ``None`` (JSON ``null``) for NaN and infinities."""
    return rounded(value) if math.isfinite(value) else None


def label_scale(series: Sequence[str], labels: Sequence[str]) -> dict[str, list]:
    """A colour scale naming ``series`` (one per label, same order) in the colours of ``labels``."""
    return {"domain": list(series), "range": [LABEL_COLORS.get(label, OTHER_COLOR) for label in labels]}


def check_predictions(y_true: np.ndarray, y_prob: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` ``(N, L)`` as int 0/1 and ``y_prob`` ``(N, L)`` as float64 in [0, 1], ``L = len(labels)``.

    Raises:
        ValueError: on other shapes, ``N == 0``, labels other than 0/1, or probabilities outside [0, 1] or not finite.
    """
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    expected = (len(y_true), len(labels))
    if y_true.ndim != 2 or y_true.shape != y_prob.shape or y_true.shape[1] != len(labels) or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_prob must both have the shape (N, {len(labels)}) with N > 0, one column per label "
            f"({', '.join(labels)}). Received: {y_true.shape} and {y_prob.shape} (expected {expected})."
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1 (one column per label).")
    if not np.isfinite(y_prob).all():
        raise ValueError("y_prob holds NaN or infinite values; every probability must be a finite number.")
    if y_prob.min() < 0 or y_prob.max() > 1:
        raise ValueError(f"y_prob must hold probabilities in [0, 1]. Received values from {y_prob.min()} to {y_prob.max()}.")
    return y_true.astype(int), y_prob


def thin(count: int, max_points: int) -> np.ndarray:
    """At most ``max_points`` indices into ``range(count)``, evenly spaced, always the first and the last."""
    if count <= max_points:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, max_points)).astype(int))


def render_png(spec: Mapping, scale: float = 2.0) -> bytes:
    """Draw a Vega-Lite spec to PNG bytes with vl-convert (no browser, no network).

    ``scale`` multiplies the pixel size (2 gives a crisp image on high-density screens and in print).
    """
    return vl_convert.vegalite_to_png(dict(spec), scale=scale, allowed_base_urls=[])


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels, read from a PNG's IHDR chunk.

    Raises:
        ValueError: if ``png`` does not start with the PNG signature.
    """
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("Expected PNG bytes (the PNG signature is missing).")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)
