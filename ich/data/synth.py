"""A synthetic head-CT data set in the exact RSNA 2019 layout (DICOM files + long labels CSV), drawn by
:mod:`ich.data.phantom`.

Each patient is a series of axial slices through an ellipsoidal head: air, scalp, skull (bone HU with a
softer diploe), brain with grey/white texture and noise, sulci and lateral ventricles (CSF). Hemorrhages
are drawn as acute blood (50-90 HU) in their characteristic place and shape and span adjacent slices:

- epidural: a biconvex lens against the inner table, narrow and thick;
- subdural: a long thin crescent along the inner table;
- intraparenchymal: an irregular blob inside the parenchyma;
- intraventricular: blood layering in the dependent part of the ventricles;
- subarachnoid: blood filling the sulci of one sector.

A slice's labels come from what was actually drawn on it (a lesion counts once it covers a few pixels),
so the labels are honest. Everything is deterministic given the seed.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from ich.core.files import atomic_write_bytes, write_csv
from ich.core.labels import ANY, RSNA_ROW_ORDER, SUBTYPES
from ich.core.params import SynthesizeParams
from ich.data.phantom import SliceMasks, draw_lesions, render_slice_with_masks, smooth_field

__all__ = ["generate", "lesion_masks", "mask_to_image"]


def _unique_hex_ids(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        candidate = f"ID_{int(rng.integers(0, 16**9)):09x}"
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


def _dicom_bytes(
    hu: np.ndarray,
    image_id: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    position_z: float,
    encoding: str,
    multivalued_window: bool,
) -> bytes:
    """Encode an HU slice as an RSNA-style CT DICOM; ``encoding`` picks how pixels are stored."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = image_id  # type: ignore[assignment]  # pydicom stores a str as UID; its annotation omits str
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = image_id
    ds.Modality = "CT"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = ""
    ds.ImagePositionPatient = [-125.0, -125.0, round(position_z, 3)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [0.488281, 0.488281]
    ds.BitsAllocated = 16
    ds.RescaleSlope = 1.0
    ds.WindowCenter = [36, 36] if multivalued_window else 40
    ds.WindowWidth = [80, 80] if multivalued_window else 80
    values = np.rint(hu)
    if encoding == "wrapped":
        # 12-bit unsigned with wrap-around: the RSNA fault that the pixel fix undoes
        stored = np.mod(np.clip(values, -1000, 3095), 4096).astype(np.uint16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = 0.0
    elif encoding == "unsigned12":
        stored = np.clip(values + 1024, 0, 4095).astype(np.uint16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.RescaleIntercept = -1024.0
    else:
        stored = np.clip(values + 1024, -32768, 32767).astype(np.int16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        ds.RescaleIntercept = -1024.0
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def generate(config: SynthesizeParams, output_dir: str | Path) -> dict[str, int]:
    """Write ``<output_dir>/stage_2_train/<ID>.dcm`` and ``<output_dir>/stage_2_train.csv``.

    Returns:
        Counts for the stage's metrics (images, series, positives per label, planted quirks).
    """
    with warnings.catch_warnings():
        # RSNA stores its IDs (``ID_...``) in UID elements, which pydicom flags as invalid: expected here.
        warnings.filterwarnings("ignore", message="Invalid value for VR UI")
        return _generate(config, Path(output_dir))


@dataclass(frozen=True)
class _Series:
    """One synthetic series: its IDs and how its files are stored."""

    patient_id: str
    study_uid: str
    series_uid: str
    rows: int
    columns: int
    encoding: str
    multivalued_window: bool


@dataclass(frozen=True)
class _Slice:
    """One rendered slice of a :class:`_Series`: its HU image, lesion pixel counts and masks."""

    series: _Series
    index: int
    image_id: str
    position_z: float
    hu: np.ndarray
    counts: dict[str, int]
    masks: SliceMasks


def _synthetic_slices(config: SynthesizeParams, rng: np.random.Generator) -> Iterator[_Slice]:
    """Every slice of the set in writing order, drawing from ``rng`` in a fixed order: the one place the
    phantom is laid out, shared by :func:`generate` and :func:`lesion_masks` (so both see the same slices)."""
    taken: set[str] = set()
    size = config.image_size
    # Smallest lesion cross-section drawn: 0.3 % of the slice, still a few pixels after downsizing.
    min_pixels = max(4, (size * size * 3) // 1000)

    for _ in range(config.patients):
        (patient_id,) = _unique_hex_ids(rng, 1, taken)
        studies = 2 if rng.random() < config.second_study_fraction else 1
        for _ in range(studies):
            study_uid, series_uid = _unique_hex_ids(rng, 2, taken)
            slices = config.slices_per_series
            rows = size
            columns = int(round(size * 490 / 638)) if rng.random() < config.nonsquare_fraction else size
            encoding = "wrapped" if rng.random() < config.wrapped_fraction else str(rng.choice(["signed16", "unsigned12"]))
            multivalued = bool(rng.random() < config.multivalued_window_fraction)
            series = _Series(patient_id, study_uid, series_uid, rows, columns, encoding, multivalued)
            head = (
                columns / 2 + rng.uniform(-0.03, 0.03) * columns,
                rows / 2 + rng.uniform(-0.03, 0.03) * rows,
                min(rows, columns) * rng.uniform(0.34, 0.37),
                rows * rng.uniform(0.41, 0.44),
            )
            lesions = draw_lesions(rng, config, slices)
            texture_a = smooth_field(rng, (rows, columns), 12)
            texture_b = smooth_field(rng, (rows, columns), 12)
            z_start = rng.uniform(-40.0, 40.0)
            image_ids = _unique_hex_ids(rng, slices, taken)
            for index, image_id in enumerate(image_ids):
                z_fraction = 0.08 + 0.84 * index / (slices - 1)
                mix = index / (slices - 1)
                texture = (1.0 - mix) * texture_a + mix * texture_b
                hu, pixel_counts, masks = render_slice_with_masks(
                    rows, columns, z_fraction, index, lesions, head, texture, rng, min_pixels
                )
                yield _Slice(series, index, image_id, z_start + 5.0 * index, hu, pixel_counts, masks)


def _generate(config: SynthesizeParams, output_dir: Path) -> dict[str, int]:
    dicom_dir = output_dir / "stage_2_train"
    dicom_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    records: list[tuple[str, dict[str, int]]] = []
    written: list[str] = []
    series_count = 0
    quirks = {"wrapped_series": 0, "nonsquare_series": 0, "multivalued_window_series": 0}

    for rendered in _synthetic_slices(config, rng):
        series = rendered.series
        if rendered.index == 0:
            series_count += 1
            quirks["wrapped_series"] += series.encoding == "wrapped"
            quirks["nonsquare_series"] += series.columns != series.rows
            quirks["multivalued_window_series"] += series.multivalued_window
        present = set(rendered.counts)
        labels = {name: int(name in present) for name in SUBTYPES}
        labels[ANY] = int(bool(present))
        records.append((rendered.image_id, labels))
        data = _dicom_bytes(
            rendered.hu,
            rendered.image_id,
            series.patient_id,
            series.study_uid,
            series.series_uid,
            rendered.position_z,
            series.encoding,
            series.multivalued_window,
        )
        atomic_write_bytes(dicom_dir / f"{rendered.image_id}.dcm", data)
        written.append(rendered.image_id)

    # Planted quirks: a corrupt file (short PixelData, as RSNA's ID_6431af929) and a file missing from disk.
    # Victims are hemorrhage-positive slices, which balanced sampling keeps, so the demo meets them.
    labelled = dict(records)
    pool = [image_id for image_id in written if labelled[image_id][ANY]] or written
    victims = rng.choice(len(pool), size=min(len(pool), config.corrupt_files + config.missing_files), replace=False)
    for position in victims[: config.corrupt_files]:
        path = dicom_dir / f"{pool[position]}.dcm"
        dataset = pydicom.dcmread(path)
        dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 3]
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
        atomic_write_bytes(path, buffer.getvalue())
    for position in victims[config.corrupt_files :]:
        (dicom_dir / f"{pool[position]}.dcm").unlink()

    order = rng.permutation(len(records))
    lines = [(f"{records[i][0]}_{label}", records[i][1][label]) for i in order for label in RSNA_ROW_ORDER]
    for index in range(config.invalid_id_images):
        bad_id = f"ID_../../outside_{index}"
        lines.extend((f"{bad_id}_{label}", 0) for label in RSNA_ROW_ORDER)
    frame = pd.DataFrame(lines, columns=["ID", "Label"])
    if config.duplicate_rows:
        extra = frame.iloc[rng.choice(len(frame), size=config.duplicate_rows, replace=False)]
        frame = pd.concat([frame, extra]).sort_index(kind="stable").reset_index(drop=True)
    write_csv(frame, output_dir / "stage_2_train.csv")

    wide = pd.DataFrame([labels for _, labels in records])
    counts = {
        "images": len(records),
        "series": series_count,
        "patients": config.patients,
        **{f"positive_{label}": int(wide[label].sum()) for label in (ANY, *SUBTYPES)},
        **quirks,
        "corrupt_files": config.corrupt_files,
        "missing_files": config.missing_files,
        "duplicate_rows": config.duplicate_rows,
        "invalid_id_images": config.invalid_id_images,
    }
    return counts


def lesion_masks(config: SynthesizeParams, image_ids: Collection[str] | None = None) -> dict[str, SliceMasks]:
    """Where lesions were drawn on each image of the set that :func:`generate` writes for ``config``.

    The phantom is laid out again from ``config.seed`` exactly as :func:`generate` does (the same random
    draws in the same order, no files written), so the masks are those of the written DICOMs, at their pixel
    grid (256 x 197 for the non-square series). :func:`mask_to_image` maps a mask to the model's image size.

    Args:
        config: the ``synthesize`` params section the set was made with.
        image_ids: the images wanted (rendering stops once all are found); None: every image.

    Returns:
        ``{image ID: SliceMasks}`` for every wanted ID the set has (a wanted ID it lacks is left out).
    """
    wanted = None if image_ids is None else set(image_ids)
    found: dict[str, SliceMasks] = {}
    for rendered in _synthetic_slices(config, np.random.default_rng(config.seed)):
        if wanted is None or rendered.image_id in wanted:
            found[rendered.image_id] = rendered.masks
            if wanted is not None and len(found) == len(wanted):
                break
    return found


def mask_to_image(mask: np.ndarray, image_size: int, min_coverage: float = 0.0) -> np.ndarray:
    """A DICOM-grid bool mask ``(rows, columns)`` at the preprocessed image's grid ``(image_size, image_size)``.

    Follows :func:`ich.imaging.rendering.render_rgb`'s geometry: a non-square mask is padded to a square with False,
    centred the same way (the 256 x 197 series get 29 columns left and 30 right), then area-resized, so each
    output pixel gets the fraction of its source pixels that are in the mask; it is in the output mask when
    that fraction is above ``min_coverage`` (0: any lesion pixel in its footprint; 0.5: a majority).
    """
    mask = np.asarray(mask, dtype=bool)
    rows, columns = mask.shape
    if rows != columns:
        side = max(rows, columns)
        top, left = (side - rows) // 2, (side - columns) // 2
        square = np.zeros((side, side), dtype=bool)
        square[top : top + rows, left : left + columns] = mask
        mask = square
    if mask.shape[0] == image_size:
        return mask.copy()
    interpolation = cv2.INTER_AREA if mask.shape[0] > image_size else cv2.INTER_LINEAR
    coverage = cv2.resize(mask.astype(np.float32), (image_size, image_size), interpolation=interpolation)
    return coverage > min_coverage + 1e-6
