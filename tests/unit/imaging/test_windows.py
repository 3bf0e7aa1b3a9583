import numpy as np
import pytest

from ich.imaging.windows import BLOOD, BONE, BRAIN, Window, apply_window, compose_rgb, window_lut, windows_from_params


def test_brain_window_hand_computed_pixels():
    # brain 40/80 spans 0..80 HU: 0 -> 0, 40 -> 127.5 -> 128 (half to even), 80 -> 255, 20 -> 63.75 -> 64
    hu = np.array([-1000.0, 0.0, 20.0, 40.0, 80.0, 1000.0])
    assert apply_window(hu, BRAIN).tolist() == [0, 0, 64, 128, 255, 255]


def test_blood_and_bone_windows_hand_computed():
    # blood 80/200 spans -20..180; bone 600/2800 spans -800..2000
    assert apply_window(np.array([-20.0, 80.0, 180.0, 30.0]), BLOOD).tolist() == [0, 128, 255, 64]
    assert apply_window(np.array([-800.0, 600.0, 2000.0, -1000.0]), BONE).tolist() == [0, 128, 255, 0]


def test_compose_rgb_puts_blood_brain_bone_in_red_green_blue():
    rgb = compose_rgb(np.array([[60.0]]))
    assert rgb.shape == (1, 1, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [apply_window(np.array(60.0), w).item() for w in (BLOOD, BRAIN, BONE)]
    assert rgb[0, 0].tolist() == [102, 191, 78]  # (60+20)/200, 60/80, (60+800)/2800 of 255


def test_lut_equals_direct_windowing():
    raw = np.random.default_rng(0).integers(-50, 3000, size=(17, 13))
    lut = window_lut(int(raw.min()), int(raw.max()), 1.0, -1024.0)
    np.testing.assert_array_equal(lut[raw - raw.min()], compose_rgb(raw * 1.0 - 1024.0))


def test_window_rejects_non_positive_width():
    with pytest.raises(ValueError, match="positive width"):
        Window("x", 40, 0)


def test_windows_from_params_validates_entries():
    windows = windows_from_params([{"name": "a", "center": 1, "width": 2}] * 3)
    assert windows[0] == Window("a", 1.0, 2.0)
    with pytest.raises(ValueError, match="exactly three"):
        windows_from_params([{"name": "a", "center": 1, "width": 2}])
    with pytest.raises(ValueError, match="name, center, width"):
        windows_from_params([{"name": "a", "center": 1, "widht": 2}] * 3)
