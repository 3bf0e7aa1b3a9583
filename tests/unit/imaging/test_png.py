"""ich.imaging.png against two independent decoders (OpenCV's libpng and Pillow's)."""

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from ich.imaging.png import encode_png


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking each CRC by hand."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(png):
        length = int.from_bytes(png[at : at + 4], "big")
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert int.from_bytes(png[at + 8 + length : at + 12 + length], "big") == zlib.crc32(kind + data)
        chunks.append((kind, data))
        at += 12 + length
    return chunks


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 48), (1, 9, 3), (13, 1, 3), (33, 17, 3), (256, 256, 3), (9, 6, 4)])
def test_decoders_return_the_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    image[: shape[0] // 2] = 0  # runs of air next to noise, as in a CT render
    png = encode_png(image)
    with Image.open(io.BytesIO(png)) as decoded:
        decoded.load()
        assert decoded.mode == {2: "L", 3: "RGB", 4: "RGBA"}[image.ndim if image.ndim == 2 else image.shape[2]]
        np.testing.assert_array_equal(np.asarray(decoded), image)
    flags = cv2.IMREAD_UNCHANGED
    via_cv2 = cv2.imdecode(np.frombuffer(png, np.uint8), flags)
    if image.ndim == 3:
        via_cv2 = cv2.cvtColor(via_cv2, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    np.testing.assert_array_equal(via_cv2.reshape(image.shape), image)


def test_only_the_image_chunks_are_written():
    png = encode_png(np.full((4, 4, 3), 200, dtype=np.uint8))
    kinds = [kind for kind, _ in _chunks(png)]
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]  # no text chunk can carry header text


def test_rows_are_up_filtered_as_the_standard_defines():
    image = np.array([[10, 250], [5, 4]], dtype=np.uint8)
    idat = dict(_chunks(encode_png(image)))[b"IDAT"]
    # filter byte 2 per row; row 0 minus a row of zeros; row 1 minus row 0 modulo 256
    assert zlib.decompress(idat) == bytes([2, 10, 250, 2, (5 - 10) % 256, (4 - 250) % 256])


def test_a_smooth_render_compresses():
    ramp = np.broadcast_to(np.linspace(0, 255, 256).astype(np.uint8)[:, None, None], (256, 256, 3))
    assert len(encode_png(ramp)) < ramp.nbytes // 50


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4, 3), np.uint16), np.zeros((4, 4, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros(4, np.uint8)],
)
def test_other_images_are_refused(image):
    with pytest.raises(ValueError, match="encode_png"):
        encode_png(image)
