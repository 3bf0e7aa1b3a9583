import numpy as np
import pytest

from ich.dicom import UnusableSlice, apply_rsna_fix, needs_rsna_fix, read_ct_slice, to_hounsfield
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


def test_rsna_fix_unwraps_12_bit_values():
    # true HU -1000 (air), -20, 0, 40, 1500 stored as HU mod 4096
    true_hu = np.array([-1000, -20, 0, 40, 1500])
    stored = np.mod(true_hu, 4096)
    fixed, intercept = apply_rsna_fix(stored)
    assert intercept == -1000.0
    np.testing.assert_array_equal(fixed + intercept, true_hu)


def test_read_ct_slice_applies_fix_for_wrapped_file():
    true_hu = np.array([[-1000, -20], [40, 1500]])
    data = ct_dicom_bytes(np.mod(true_hu, 4096), intercept=0.0, bits_stored=12, pixel_representation=0)
    ct = read_ct_slice(data, "ID_ab")
    np.testing.assert_array_equal(to_hounsfield(ct.pixels, ct.slope, ct.intercept), true_hu)


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
