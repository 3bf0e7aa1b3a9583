"""A CT slice as an RGB image: three windows composed into colour channels, padded square, resized."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ich.imaging.dicom import CtSlice
from ich.imaging.windows import DEFAULT_WINDOWS, Window, compose_rgb, window_lut

__all__ = ["render_rgb"]

# Beyond this many distinct stored values a lookup table would cost more memory than the image itself
# (only damaged or unusual 32-bit data get there); such slices are windowed directly, with the same values.
_MAX_LUT_ENTRIES = 1 << 20

cv2.setNumThreads(1)  # the parallelism is across files; threads inside each call only contend


def render_rgb(ct_slice: CtSlice, image_size: int, windows: Sequence[Window] = DEFAULT_WINDOWS) -> np.ndarray:
    """Window a slice into RGB and area-resize it to ``(image_size, image_size, 3)`` uint8.

    A non-square slice is first padded to a square with zeros (air is 0 in all three windows), so
    anatomy keeps its aspect ratio. Windowing happens at full resolution and before resizing, so each
    output pixel is the mean of the windowed input pixels it covers (up to rounding).
    """
    pixels = ct_slice.pixels
    low, high = (int(value) for value in cv2.minMaxLoc(pixels)[:2])  # one pass for both
    if high - low < _MAX_LUT_ENTRIES:
        lut = window_lut(low, high, ct_slice.slope, ct_slice.intercept, windows).astype("<u4")
        # Pack each RGB entry into one little-endian uint32 (R, G, B, 0): a 1-D gather of 4-byte items is
        # ~5x faster than gathering (n, 3) rows; the bytes are then viewed as RGBA (resized with the alpha
        # byte, which costs less than dropping it first).
        packed = lut[:, 0] | (lut[:, 1] << 8) | (lut[:, 2] << 16)
        if pixels.dtype.itemsize == 2:  # 16-bit stored values: the offset index in 16-bit arithmetic,
            # (value - low) mod 2**16, which is exact as high - low < 2**16 (a quarter of the intp bytes)
            index = pixels.view(np.uint16) - np.uint16(low & 0xFFFF)
        else:
            index = np.subtract(pixels, low, dtype=np.intp)
        image = packed[index].view(np.uint8).reshape(*pixels.shape, 4)
    else:  # the same arithmetic as window_lut, per pixel
        image = compose_rgb(pixels.astype(np.float64) * ct_slice.slope + ct_slice.intercept, windows)
    rows, columns = image.shape[:2]
    if rows != columns:
        side = max(rows, columns)
        top, left = (side - rows) // 2, (side - columns) // 2
        square = np.zeros((side, side, image.shape[2]), dtype=np.uint8)
        square[top : top + rows, left : left + columns] = image
        image = square
    if image.shape[0] != image_size:
        interpolation = cv2.INTER_AREA if image.shape[0] > image_size else cv2.INTER_LINEAR
        image = cv2.resize(image, (image_size, image_size), interpolation=interpolation)  # channels independent
    return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB) if image.shape[2] == 4 else image
