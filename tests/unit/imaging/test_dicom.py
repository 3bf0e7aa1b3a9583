import numpy as np
import pytest

from ich.imaging.dicom import UnusableSlice, needs_rsna_fix, read_ct_slice, to_hounsfield
from tests.helpers import ct_dicom_bytes


def test_hounsfield_uses_slope_and_intercept():
    hu = to_hounsfield(np.array([0, 1024, 1064]), slope=1.0, intercept=-1024.0)
    assert hu.tolist() == [-1024.0, 0.0, 40.0]
    assert to_hounsfield(np.array([10]), slope=2.0, intercept=-5.0).tolist() == [15.0]


def test_rsna_fix_condition():
    assert needs_rsna_fix(12, 0, 0.0)
    assert needs_rsna_fix(12, 0, 1.0)
    assert not needs_rsna_fix(12, 0, -1024.0)
    assert not needs_rsna_fix(16, 0, 0.0)
    assert not needs_rsna_fix(12, 1, 0.0)


# A head phantom in true HU: air and brain (top row), a fresh bleed and bone (bottom row).
PHANTOM_HU = np.array([[-1000, 35], [70, 1000]])


def test_real_layout_rsna_slice_is_left_untouched():
    # How most RSNA slices are stored: unsigned 12-bit values HU + 1024 (air 24, brain 1059, bone 2724,
    # up to ~2800 for dense bone) with RescaleIntercept -1024. The rule does not apply (intercept <= -100).
    stored = np.array([[24, 1059], [1094, 2724]])
    data = ct_dicom_bytes(stored, intercept=-1024.0, bits_stored=12, pixel_representation=0)
    ct = read_ct_slice(data, "ID_ab")
    np.testing.assert_array_equal(ct.pixels, stored)
    assert ct.intercept == -1024.0
    assert to_hounsfield(ct.pixels, ct.slope, ct.intercept).tolist() == [[-1000, 35], [70, 1700]]


def _wrapped_slice(intercept: float) -> bytes:
    """The RSNA files the public kernels fix: the scanner wrote each HU as a 12-bit two's-complement
    number (HU & 0xFFF) into an unsigned 12-bit field, with a RescaleIntercept near 0. Air (-1000 HU) is
    then stored as 3096 and, read as written, looks like bone; brain (35) and bone (1000) keep their HU.
    Stored values by hand: -1000 = 0xFC18 -> 0xC18 = 3096; 35 -> 35; 70 -> 70; 1000 -> 1000."""
    stored = np.array([[3096, 35], [70, 1000]])
    assert np.array_equal(stored, PHANTOM_HU.astype(np.int16).view(np.uint16) & 0x0FFF)  # the same, by bits
    return ct_dicom_bytes(stored, intercept=intercept, bits_stored=12, pixel_representation=0)


@pytest.mark.parametrize("intercept", [0.0, 1.0])
def test_wrapped_rsna_slice_comes_out_in_hounsfield_units(intercept):
    ct = read_ct_slice(_wrapped_slice(intercept), "ID_ab", rsna_pixel_fix="auto")
    (air, brain), (bleed, bone) = to_hounsfield(ct.pixels, ct.slope, ct.intercept).tolist()
    assert air == pytest.approx(-1000, abs=2)
    assert 30 <= brain <= 40 and 65 <= bleed <= 75
    assert bone > 700


def test_rsna_fix_off_keeps_stored_values():
    ct = read_ct_slice(_wrapped_slice(0.0), "ID_ab", rsna_pixel_fix="off")
    np.testing.assert_array_equal(ct.pixels, [[3096, 35], [70, 1000]])
    assert ct.intercept == 0.0
    assert to_hounsfield(ct.pixels, ct.slope, ct.intercept)[0, 0] == 3096.0  # air read as bone


def test_rsna_fix_mode_is_checked():
    with pytest.raises(ValueError, match="auto, off.*'on'"):
        read_ct_slice(_wrapped_slice(0.0), "ID_ab", rsna_pixel_fix="on")


def test_implausible_image_size_is_a_reason():
    data = ct_dicom_bytes(np.arange(2 * 4100).reshape(2, 4100))
    with pytest.raises(UnusableSlice, match="implausible image size 2x4100"):
        read_ct_slice(data, "ID_ab")


def test_read_ct_slice_signed_and_metadata_without_identifying_tags():
    data = ct_dicom_bytes(np.array([[0, 1064], [2048, 24]]), position_z=-12.5, window_center=[36, 36])
    ct = read_ct_slice(data, "ID_ab")
    assert to_hounsfield(ct.pixels, ct.slope, ct.intercept).tolist() == [[-1024, 40], [1024, -1000]]
    assert ct.metadata["position_z"] == -12.5
    assert ct.metadata["PatientID"] == "ID_p1"
    assert (ct.metadata["rows"], ct.metadata["columns"]) == (2, 2)
    assert "Doe" not in repr(ct.metadata)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a dicom at all" * 20, "not a DICOM file"),
        (ct_dicom_bytes(np.array([[1, 2]]), modality="MR"), "not a CT image"),
        (ct_dicom_bytes(np.full((3, 3), 7)), "blank image"),
    ],
)
def test_unusable_slices_have_specific_reasons(data, reason):
    with pytest.raises(UnusableSlice, match=reason):
        read_ct_slice(data, "ID_ab")


def test_truncated_pixel_data_is_reported():
    import io

    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(ct_dicom_bytes(np.arange(64).reshape(8, 8))))
    dataset.PixelData = dataset.PixelData[:20]
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    with pytest.raises(UnusableSlice, match="truncated"):
        read_ct_slice(buffer.getvalue(), "ID_ab")
