import cv2
import numpy as np
import pytest

from ich.dicom import read_ct_slice
from ich.preprocess import encode_png, process_many, render_rgb
from ich.windows import compose_rgb
from tests.helpers import ct_dicom_bytes


def _slice(stored, **kwargs):
    return read_ct_slice(ct_dicom_bytes(stored, **kwargs), "ID_ab")


def test_render_equals_windows_then_area_resize():
    rng = np.random.default_rng(0)
    stored = rng.integers(900, 1200, size=(64, 64))  # HU -124..176: every window clips somewhere
    rgb = render_rgb(_slice(stored), 32)
    reference = compose_rgb(stored - 1024.0).astype(np.float64)
    reference = reference.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb - reference).max() <= 1.0  # rounding only


def test_non_square_slice_is_padded_with_air_keeping_aspect():
    stored = np.full((40, 20), 1024 + 40)
    stored[0, 0] = 0  # one air pixel so the image is not blank
    rgb = render_rgb(_slice(stored), 40)
    assert rgb.shape == (40, 40, 3)
    assert (rgb[:, :10] == 0).all() and (rgb[:, 30:] == 0).all()
    assert rgb[20, 20, 1] == 128  # brain window of 40 HU


def test_png_round_trip_is_rgb():
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    decoded = cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(decoded, rgb)
    assert b"tEXt" not in encode_png(rgb)


@pytest.mark.parametrize("workers", [1, 2])
def test_process_many_writes_pngs_and_quarantines_with_reasons(tmp_path, workers):
    dicom_dir, png_dir = tmp_path / "dicom", tmp_path / "png"
    dicom_dir.mkdir()
    good = np.arange(256).reshape(16, 16) + 900
    for index in range(6):
        (dicom_dir / f"ID_{index:x}0.dcm").write_bytes(ct_dicom_bytes(good))
    (dicom_dir / "ID_bad.dcm").write_bytes(b"garbage")
    ids = [f"ID_{index:x}0" for index in range(6)] + ["ID_bad", "ID_missing0", "ID_../../etc"]
    ids[-2] = "ID_ffff"
    results = list(process_many(ids, dicom_dir, png_dir, image_size=8, workers=workers))
    assert [result.image_id for result in results] == ids
    written = sorted(path.name for path in png_dir.iterdir())
    assert written == sorted(f"ID_{index:x}0.png" for index in range(6))
    reasons = {result.image_id: result.reason for result in results if result.reason}
    assert reasons["ID_bad"].startswith("not a DICOM file")
    assert reasons["ID_ffff"].startswith("file missing")
    assert reasons["ID_../../etc"].startswith("invalid image ID")
    assert not (tmp_path / "etc.png").exists()
