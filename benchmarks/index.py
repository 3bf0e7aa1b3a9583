"""Benchmark: ``ich.data.index`` header scan vs a plain one-process pydicom loop, on the same DICOMs, same run.

Writes ``--files`` RSNA-like DICOMs (512x512 16-bit, ~0.5 MB each, the synthetic set's RSNA header) to
a temporary folder, warms the page cache, then measures ``--repeats`` times each: a plain loop of
``pydicom.dcmread(path, stop_before_pixels=True)`` in one process (what a notebook does), and
``ich.data.index.index_headers`` with ``--workers`` processes (0 = all cores). Prints headers/s (median), the
ratio, and the time the scan would take for RSNA's 752,803 files at that rate (from the page cache:
storage that has to seek for every file is slower):

    python -m benchmarks.index --files 3000 --repeats 3

``--cache-states FOLDER`` measures instead the index scan of the first ``--files`` DICOMs of an existing folder (the
RSNA-size set of ``benchmarks.rsna_data``, say) from a cold page cache (each file's pages evicted first with
``POSIX_FADV_DONTNEED``) and from a warm one, with the index's read-ahead and without it:

    python -m benchmarks.index --cache-states /tmp/rsna-size/stage_2_train --files 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom

from ich.data.index import index_headers
from ich.data.synth import _dicom_bytes

RSNA_IMAGES = 752_803


def write_rsna_like_files(folder: Path, count: int, seed: int, size: int = 512) -> list[str]:
    """Write ``count`` DICOMs ``<ID>.dcm`` in the synthetic set's RSNA layout; return their IDs.

    One head-shaped HU slice is shared by all; IDs, patients, series (40 slices each) and slice
    positions differ, as do the pixel encodings RSNA mixes (signed 16-bit, 12-bit unsigned, wrapped).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inside = ((yy - size / 2) / (0.42 * size)) ** 2 + ((xx - size / 2) / (0.36 * size)) ** 2 < 1
    hu = np.where(inside, 40.0, -1000.0) + rng.normal(0.0, 5.0, (size, size))
    codes = rng.choice(16**9, size=count + 3 * (count // 40 + 1), replace=False)
    names = [f"ID_{code:09x}" for code in codes]
    ids = names[:count]
    encodings = ("signed16", "unsigned12", "wrapped")
    for index, image_id in enumerate(ids):
        series = index // 40
        patient, study, series_uid = names[count + 3 * series : count + 3 * series + 3]
        data = _dicom_bytes(hu, image_id, patient, study, series_uid, 5.0 * (index % 40), encodings[series % 3], series % 7 == 0)
        (folder / f"{image_id}.dcm").write_bytes(data)
    return ids


def plain_loop(paths: list[Path]) -> list[tuple]:
    """The same fields as the index, read the plain way."""
    rows = []
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rows.append(
            (
                path.stem,
                str(ds.PatientID),
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                float(ds.ImagePositionPatient[2]),
                int(ds.Rows),
                int(ds.Columns),
            )
        )
    return rows


def _evict(paths: list[str]) -> None:
    """Drop the files' pages from the page cache (clean pages only: the files must have been written back)."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def _no_read_ahead(image_ids: list[str], dicom_dir: str) -> None:
    return None


def cache_states(folder: Path, files: int, workers: int) -> None:
    """The index scan cold and warm, with the read-ahead and without it, on the first ``files`` DICOMs of ``folder``."""
    import ich.data.index

    os.sync()  # written-back pages only can be evicted
    ids = sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".dcm"))[:files]
    paths = [str(folder / f"{image_id}.dcm") for image_id in ids]
    read_ahead = ich.data.index._read_ahead
    for ahead in (True, False):
        ich.data.index._read_ahead = read_ahead if ahead else _no_read_ahead  # type: ignore[assignment]
        for state in ("cold", "warm"):
            if state == "cold":
                _evict(paths)
            start = time.perf_counter()
            results = list(index_headers(ids, folder, workers=workers))
            seconds = time.perf_counter() - start
            print(
                f"read-ahead {'on ' if ahead else 'off'} {state}: {seconds:6.1f} s for {len(results):,} headers "
                f"({len(results) / seconds:,.0f}/s; {RSNA_IMAGES / len(results) * seconds:,.0f} s at {RSNA_IMAGES:,})",
                flush=True,
            )
    ich.data.index._read_ahead = read_ahead  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=0, help="0 = all cores")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-states", type=Path, metavar="FOLDER", help="cold vs warm page cache on FOLDER's DICOMs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Invalid value for VR UI")
    if args.cache_states:
        cache_states(args.cache_states, args.files, args.workers)
        return

    with tempfile.TemporaryDirectory(prefix="ich-bench-index-") as work:
        folder = Path(work)
        ids = write_rsna_like_files(folder, args.files, args.seed)
        paths = [folder / f"{image_id}.dcm" for image_id in ids]
        size_mib = sum(path.stat().st_size for path in paths) / 2**20
        for path in paths:  # warm the page cache so both sides read from memory
            path.read_bytes()
        plain_times, index_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            plain_loop(paths)
            plain_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            results = list(index_headers(ids, folder, workers=args.workers))
            index_times.append(time.perf_counter() - start)
            failed = [result for result in results if result.reason is not None]
            if failed:
                raise SystemExit(f"{len(failed)} headers failed, e.g. {failed[0]}")
        plain_rate = len(paths) / statistics.median(plain_times)
        index_rate = len(paths) / statistics.median(index_times)
        workers = args.workers or os.cpu_count()
        print(
            f"files: {len(paths)} RSNA-like DICOMs, {size_mib / len(paths):.2f} MiB each, page cache warm; "
            f"ich.data.index with {workers} worker(s); median of {args.repeats}"
        )
        print(f"plain loop (pydicom.dcmread, stop_before_pixels, 1 process): {plain_rate:8.0f} headers/s")
        print(f"ich.data.index.index_headers:                                     {index_rate:8.0f} headers/s")
        print(f"speed-up: {index_rate / plain_rate:.2f}x")
        print(
            f"projected for RSNA's {RSNA_IMAGES:,} files: plain loop {RSNA_IMAGES / plain_rate / 60:.1f} min, "
            f"ich.data.index {RSNA_IMAGES / index_rate / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
