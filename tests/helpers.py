"""Builders for tiny test inputs: CT DICOMs and RSNA-style CSVs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from ich.core.labels import RSNA_ROW_ORDER


def ct_dicom_bytes(
    stored: np.ndarray,
    *,
    intercept: float = -1024.0,
    slope: float = 1.0,
    bits_stored: int = 16,
    pixel_representation: int = 1,
    modality: str = "CT",
    patient_id: str = "ID_p1",
    position_z: float = 0.0,
    window_center: object = 40,
) -> bytes:
    """A minimal single-frame DICOM with the given stored pixel values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.ImagePositionPatient = [0.0, 0.0, position_z]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = pixel_representation
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    ds.WindowCenter = window_center
    ds.WindowWidth = 80
    dtype = "<i2" if pixel_representation else "<u2"
    ds.PixelData = np.asarray(stored).astype(dtype).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_long_csv(path: Path, labels: dict[str, dict[str, int]], extra_lines: list[str] = ()) -> Path:
    """Write an RSNA long CSV for ``{image_id: {label: 0/1}}`` plus raw ``extra_lines``."""
    lines = ["ID,Label"]
    for image_id, values in labels.items():
        lines += [f"{image_id}_{label},{values.get(label, 0)}" for label in RSNA_ROW_ORDER]
    lines += list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path
