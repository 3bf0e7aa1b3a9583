"""CT display windows and the 3-window RGB composition (blood red, brain green, bone blue)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Window",
    "BLOOD",
    "BRAIN",
    "BONE",
    "DEFAULT_WINDOWS",
    "apply_window",
    "compose_rgb",
    "window_lut",
    "windows_from_params",
]


@dataclass(frozen=True)
class Window:
    """A display window in Hounsfield units: values in ``[center - width/2, center + width/2]`` map
    linearly to ``[0, 255]``; values outside are clipped."""

    name: str
    center: float
    width: float

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise ValueError(f"Window {self.name!r} needs a positive width. Received: {self.width}")

    @property
    def lower(self) -> float:
        return self.center - self.width / 2

    @property
    def upper(self) -> float:
        return self.center + self.width / 2


#: Subdural/blood window, red channel (1st-place RSNA 2019 solution's choice).
BLOOD = Window("blood", center=80.0, width=200.0)
#: Brain window, green channel.
BRAIN = Window("brain", center=40.0, width=80.0)
#: Bone window, blue channel.
BONE = Window("bone", center=600.0, width=2800.0)
DEFAULT_WINDOWS: tuple[Window, Window, Window] = (BLOOD, BRAIN, BONE)


def apply_window(hounsfield: np.ndarray, window: Window) -> np.ndarray:
    """Window an array of HU into ``uint8`` of the same shape (round half to even)."""
    scaled = (np.asarray(hounsfield, dtype=np.float64) - window.lower) * 255.0 / window.width
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def compose_rgb(hounsfield: np.ndarray, windows: Sequence[Window] = DEFAULT_WINDOWS) -> np.ndarray:
    """Stack three windows of a ``(H, W)`` HU image into a ``(H, W, 3)`` uint8 RGB image."""
    if len(windows) != 3:
        raise ValueError(f"An RGB image needs exactly three windows. Received: {len(windows)}")
    return np.stack([apply_window(hounsfield, window) for window in windows], axis=-1)


def window_lut(low: int, high: int, slope: float, intercept: float, windows: Sequence[Window] = DEFAULT_WINDOWS) -> np.ndarray:
    """Lookup table from stored pixel values ``low..high`` to RGB: ``(high - low + 1, 3)`` uint8.

    ``lut[raw - low]`` equals ``compose_rgb(raw * slope + intercept)`` exactly, at the cost of one
    gather per pixel instead of three float passes over the image.
    """
    hounsfield = np.arange(low, high + 1, dtype=np.float64) * slope + intercept
    return compose_rgb(hounsfield, windows)


def windows_from_params(entries: Sequence[Mapping[str, object]]) -> tuple[Window, ...]:
    """Build windows from ``preprocess.windows`` (a list of ``{name, center, width}`` in R, G, B order)."""
    if len(entries) != 3:
        raise ValueError(f"`preprocess.windows` must list exactly three windows (red, green, blue). Received: {len(entries)}")
    windows = []
    for entry in entries:
        unknown = set(entry) - {"name", "center", "width"}
        if unknown or not {"name", "center", "width"} <= set(entry):
            raise ValueError(
                f"Each entry of `preprocess.windows` needs exactly the keys name, center, width. Received: {dict(entry)}"
            )
        windows.append(Window(str(entry["name"]), float(entry["center"]), float(entry["width"])))  # type: ignore[arg-type]
    return tuple(windows)
