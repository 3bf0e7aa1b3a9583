"""Benchmark: does ``ich predict``'s out-of-distribution flag separate the model's own kind of data from data unlike
it? The false-alarm rate on the demo's test DICOMs (in distribution: series the model never saw, drawn like its
training data) and the detection rate on series built here, each unlike the phantom in its own way:

- ``abdomen``: another body region: a wide body of fat and muscle, organs, a vertebra, bowel gas, no skull;
- ``intensity+300``, ``intensity-200``: the test DICOMs themselves with their intensities shifted (a wrong
  RescaleIntercept);
- ``noise``: uniform noise from -1000 to 2000 HU with a CT header;
- ``ct_small``: pydicom's test slice ``CT_small.dcm`` (another scanner, another body part), shifted and noised
  into series.

Every series gets new UIDs and slices 5 mm apart. Runs ``ich predict`` on each folder and counts the flagged series,
and which check flagged them (the feature distance, the window intensities):

    python -m benchmarks.ood --models models --split data/split/test.csv --dicom-dir data/dicom --series 20
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["ct_series", "abdomen_slices", "noise_slices", "ct_small_slices", "shifted_copies", "OOD_SETS", "main"]

SLICE_GAP_MM = 5.0


def _ct_bytes(hu: np.ndarray, uids: tuple[str, str, str], position_z: float, patient_id: str) -> bytes:
    """One CT slice (signed 16-bit, intercept -1024) of ``hu`` with the study, series and instance UIDs ``uids``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = uids[2]  # type: ignore[assignment]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uids[2]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids[0], uids[1]
    ds.Modality, ds.PatientID = "CT", patient_id
    ds.ImagePositionPatient = [-125.0, -125.0, position_z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024.0, 1.0
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = np.clip(np.rint(hu) + 1024, -32768, 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def ct_series(folder: Path, images: Iterable[np.ndarray], patient_id: str = "OOD") -> list[Path]:
    """Write the HU images ``(H, W)`` as one new series (fresh UIDs, slices 5 mm apart) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for index, hu in enumerate(images):
        instance = generate_uid()
        path = folder / f"{instance}.dcm"
        path.write_bytes(_ct_bytes(np.asarray(hu, dtype=np.float32), (study, series, instance), SLICE_GAP_MM * index, patient_id))
        paths.append(path)
    return paths


def abdomen_slices(rng: np.random.Generator, size: int, slices: int) -> list[np.ndarray]:
    """An abdomen-like phantom in HU: a wide body (fat ring, muscle), liver, kidneys, a vertebra and bowel gas."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = 0.5 + rng.uniform(-0.03, 0.03), 0.52 + rng.uniform(-0.03, 0.03)
    ax, ay = rng.uniform(0.42, 0.47), rng.uniform(0.28, 0.33)
    images = []
    for index in range(slices):
        hu = np.full((size, size), -1000.0, np.float32)
        body = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        hu[body < 1.0] = -100.0  # subcutaneous fat
        hu[body < 0.8] = 45.0  # muscle and organs
        liver = ((x - cx + 0.18) / 0.16) ** 2 + ((y - cy + 0.02) / (0.13 + 0.004 * index)) ** 2 < 1.0
        hu[liver] = 60.0
        for side in (-1.0, 1.0):
            hu[((x - cx - side * 0.15) / 0.05) ** 2 + ((y - cy - 0.1) / 0.07) ** 2 < 1.0] = 150.0  # enhancing kidneys
        vertebra = ((x - cx) / 0.06) ** 2 + ((y - cy - 0.18) / 0.05) ** 2 < 1.0
        hu[vertebra] = 700.0
        for _ in range(int(rng.integers(3, 8))):  # bowel gas
            gx, gy, radius = cx + rng.uniform(-0.2, 0.2), cy + rng.uniform(-0.15, 0.05), rng.uniform(0.02, 0.05)
            hu[((x - gx) ** 2 + (y - gy) ** 2 < radius**2) & (body < 0.8)] = -900.0
        images.append(hu + rng.normal(0.0, 12.0, hu.shape).astype(np.float32))
    return images


def noise_slices(rng: np.random.Generator, size: int, slices: int) -> list[np.ndarray]:
    """Uniform noise from -1000 to 2000 HU."""
    return [rng.uniform(-1000.0, 2000.0, (size, size)).astype(np.float32) for _ in range(slices)]


def ct_small_slices(rng: np.random.Generator, size: int, slices: int) -> list[np.ndarray]:
    """pydicom's ``CT_small.dcm`` (128 px, another body part and scanner) in HU, resized to ``size``, each slice shifted
    by a few pixels and with its own noise."""
    from pydicom.data import get_testdata_file

    source = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    stored = source.pixel_array.astype(np.float32) * float(source.RescaleSlope) + float(source.RescaleIntercept)
    hu = cv2.resize(stored, (size, size), interpolation=cv2.INTER_LINEAR)
    images = []
    for _ in range(slices):
        dx, dy = rng.uniform(-0.05, 0.05, 2) * size
        shift = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]], dtype=np.float32)
        moved = cv2.warpAffine(hu, shift, (size, size), borderValue=-1000.0)
        images.append(np.asarray(moved, np.float32) + rng.normal(0.0, 10.0, (size, size)).astype(np.float32))
    return images


def shifted_copies(files: list[Path], offset_hu: float) -> list[np.ndarray]:
    """The HU images of ``files`` (one series, in z order) with ``offset_hu`` added: what a wrong intercept looks like."""
    from ich.imaging.dicom import read_ct_slice, to_hounsfield  # the project's reader, RSNA pixel fix included

    slices = [read_ct_slice(path.read_bytes(), path.stem) for path in files]
    return [to_hounsfield(item.pixels, item.slope, item.intercept) + offset_hu for item in slices]


#: The generated sets: name -> builder ``(rng, size, slices) -> HU images``.
OOD_SETS: dict[str, Callable[[np.random.Generator, int, int], list[np.ndarray]]] = {
    "abdomen": abdomen_slices,
    "noise": noise_slices,
    "ct_small": ct_small_slices,
}


def _predict(dicom_dir: Path, models: str, out: Path) -> dict[str, Any]:
    from ich.inference.cli import main as predict_main

    try:
        predict_main([str(dicom_dir), "--models", models, "--out", str(out), "--no-explain", "--no-progress", "--workers", "1"])
    except SystemExit as stop:  # run_stage exits 0 on success
        if stop.code not in (0, None):
            raise
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("--split", default="data/split/test.csv", help="in-distribution images: a split table's IDs")
    parser.add_argument("--dicom-dir", default="data/dicom", help="where the split's <ID>.dcm lie")
    parser.add_argument("--series", type=int, default=20, help="series per generated set")
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--size", type=int, default=256, help="pixels of the generated slices")
    parser.add_argument("--offsets-hu", type=float, nargs="*", default=[300.0, -200.0], help="the intensity sets' shifts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import pandas as pd

    rng = np.random.default_rng(args.seed)
    split = pd.read_csv(args.split)
    results: dict[str, object] = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()})"}
    with tempfile.TemporaryDirectory(prefix="ood-") as temporary:
        root = Path(temporary)
        own = root / "in_distribution"
        own.mkdir()
        for image_id in split["ID"]:
            shutil.copyfile(Path(args.dicom_dir) / f"{image_id}.dcm", own / f"{image_id}.dcm")
        folders = {"in_distribution": own}
        for name, build in OOD_SETS.items():
            for _ in range(args.series):
                ct_series(root / name, build(rng, args.size, args.slices))
            folders[name] = root / name
        ordered = split.sort_values(["SeriesInstanceUID", "position_z"])
        for offset in args.offsets_hu:
            name = f"intensity{offset:+g}"
            for _, group in list(ordered.groupby("SeriesInstanceUID", sort=False))[: args.series]:
                files = [Path(args.dicom_dir) / f"{image_id}.dcm" for image_id in group["ID"]]
                ct_series(root / name, shifted_copies(files, offset))
            folders[name] = root / name
        for name, folder in folders.items():
            summary = _predict(folder, args.models, root / f"{name}.out")
            series = pd.read_csv(root / f"{name}.out" / "series.csv")
            flagged, total = summary.get("ood_series"), int(summary["series"])
            row: dict[str, object] = {"series": total, "flagged": flagged, "threshold": summary.get("ood_threshold")}
            if flagged is not None:
                row["rate"] = round(int(flagged) / total, 4)
                row["by_distance"] = int((series["ood_distance"] > summary["ood_threshold"]).sum())
                row["by_intensity"] = int((series["ood_intensity_z"] > summary["ood_intensity_z_limit"]).sum())
                row["distance_median"] = round(float(series["ood_distance"].median()), 2)
            results[name] = row
            print(f"{name}: {flagged} of {total} series flagged", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
