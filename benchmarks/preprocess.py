"""Benchmark: the preprocess stage's code vs a plain one-process loop, on the same DICOMs, same run.

The plain loop is what a notebook does: pydicom ``pixel_array``, float numpy windows, PIL area resize
and PIL PNG save. Both write 8-bit RGB PNGs of the same windows. Prints images/s of each (median of
``--repeats`` runs) and the ratio.

    python -m benchmarks.preprocess --images 400 --dicom-size 512 --image-size 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from ich.core.params import SynthesizeParams
from ich.data.preprocess import process_many
from ich.data.synth import generate
from ich.imaging.dicom import apply_rsna_fix, needs_rsna_fix
from ich.imaging.windows import DEFAULT_WINDOWS


def plain_loop(paths: list[Path], out_dir: Path, image_size: int) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
        intercept, slope = float(ds.RescaleIntercept), float(ds.RescaleSlope)
        if needs_rsna_fix(int(ds.BitsStored), int(ds.PixelRepresentation), intercept):
            pixels, intercept = apply_rsna_fix(pixels)
        hu = pixels.astype(np.float32) * slope + intercept
        channels = [np.clip((hu - w.lower) / w.width, 0, 1) * 255 for w in DEFAULT_WINDOWS]
        rgb = np.stack(channels, axis=-1).round().astype(np.uint8)
        Image.fromarray(rgb).resize((image_size, image_size), Image.BOX).save(out_dir / f"{path.stem}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--dicom-size", type=int, default=512, help="side of the synthetic DICOMs (RSNA: 512)")
    parser.add_argument("--image-size", type=int, default=256, help="output PNG side (seed: 256)")
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file-timeout", type=float, default=60.0, help="seconds per file, as preprocess.file_timeout_s")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Invalid value for VR UI")

    work = Path(tempfile.mkdtemp(prefix="ich-bench-"))
    try:
        slices = 20
        config = SynthesizeParams(
            patients=max(1, args.images // slices),
            slices_per_series=slices,
            image_size=args.dicom_size,
            corrupt_files=0,
            missing_files=0,
            duplicate_rows=0,
            invalid_id_images=0,
        )
        generate(config, work / "src")
        paths = sorted((work / "src" / "stage_2_train").glob("*.dcm"))
        ids = [path.stem for path in paths]
        # warm the page cache so both sides read from memory
        for path in paths:
            path.read_bytes()
        plain_times, stage_times = [], []
        for _ in range(args.repeats):
            out = work / "plain"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            start = time.perf_counter()
            plain_loop(paths, out, args.image_size)
            plain_times.append(time.perf_counter() - start)

            out = work / "stage"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            results = list(
                process_many(
                    ids,
                    work / "src" / "stage_2_train",
                    out,
                    args.image_size,
                    workers=args.workers,
                    file_timeout_s=args.file_timeout,
                )
            )
            stage_times.append(time.perf_counter() - start)
            assert all(result.reason is None for result in results)
        plain_rate = len(paths) / statistics.median(plain_times)
        stage_rate = len(paths) / statistics.median(stage_times)
        cores = args.workers or os.cpu_count()
        print(
            f"files: {len(paths)} DICOMs {args.dicom_size}px -> PNG {args.image_size}px, {cores} worker(s), "
            f"median of {args.repeats}"
        )
        print(f"plain loop (pydicom + numpy + PIL, 1 process): {plain_rate:8.1f} images/s")
        print(f"preprocess stage code:                         {stage_rate:8.1f} images/s")
        print(f"speed-up: {stage_rate / plain_rate:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
