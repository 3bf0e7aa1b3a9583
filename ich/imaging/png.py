"""PNG encoding of 8-bit images, fast: each row "Up"-filtered in numpy, the stream deflated by ISA-L.

The PNG writer is the preprocess stage's hottest step after DICOM parsing. OpenCV's encoder (libpng + zlib
at level 1, libpng's fast filter choice) took ~1.8 ms for a 256 px RGB slice; this one takes ~0.35 ms for
files 2-4 % larger (``benchmarks/preprocess.py`` prints both). Two choices make the difference:

* every row gets PNG filter type 2 ("Up": the byte above is subtracted, mod 256), one vectorised subtraction
  for the whole image. CT renders are smooth vertically, so Up is within a few per cent of libpng's per-row
  choice among none/sub/up, which costs three passes and a comparison;
* ISA-L's deflate (``isal``, Intel's SIMD implementation of the same format) instead of zlib: 4-5x faster
  at level 1 for the same ratio as zlib's level 1.

The output is a plain PNG that every decoder reads; no text chunks are written, so no header text can leak.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from isal import isal_zlib

__all__ = ["encode_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour type per channel count: greyscale, RGB, RGBA.
_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}
_FILTER_UP = 2
_DEFLATE_LEVEL = 1  # ISA-L's levels are 0-3; 2 and 3 were no smaller on CT renders


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, and the CRC-32 of type and data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image: np.ndarray) -> bytes:
    """Encode an 8-bit image as PNG bytes.

    Args:
        image: ``(H, W)`` greyscale, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, ``uint8``, channels in that
            order (not OpenCV's BGR).

    Raises:
        ValueError: for another dtype, shape or an empty image.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels. Received dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in _COLOUR_TYPES or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"encode_png needs an (H, W), (H, W, 3) or (H, W, 4) image. Received shape {image.shape}")
    height, width, channels = image.shape
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = _FILTER_UP  # above the first row the PNG standard puts a row of zeros
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8 arithmetic wraps mod 256, as PNG's does
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", isal_zlib.compress(filtered.data, _DEFLATE_LEVEL)),
            _chunk(b"IEND", b""),
        )
    )
