"""Benchmark: `dvc repro preprocess` end to end (DVC startup, dependency check, stage, hashing and caching of
the outputs) vs the plain one-process loop of benchmarks/preprocess.py, on the same DICOMs, same run.

A temporary copy of the repository gets N RSNA-like 512x512 16-bit DICOMs (ich.data.synth): `data.dicom_dir`
points at them, `data/sampled.csv` and `data/index_quarantine.csv` are written from their headers, and
dvc.yaml keeps only the `copy` and `preprocess` stages (upstream of them there is nothing to check).
`dvc repro copy` runs once; then plain loop and `dvc repro preprocess` alternate, `--repeats` times each.
Before every timed repro the blood window's center moves by 1 HU, so only that stage reruns (after DVC has
checked `copy` and the `data/dicom` dependency, as after a user's edit) and every PNG is new: DVC hashes and
caches 3,000 new files each time, as on the first run. Prints the medians, the ratio, and the split of the
repro time into the stage script (its own log line) and DVC.

Nothing is deleted between repeats on either side (the plain loop writes into a new folder each time, the
previous PNGs stay in the DVC cache as after a user's rerun). On ext4 without a journal, creating a file
right after thousands were deleted costs ~1 ms instead of ~25 us (the kernel's inode allocator steps over
every inode freed in the last seconds, `recently_deleted()`), which would tax whichever side came after a
deletion.

    python -m benchmarks.preprocess_stage --images 3000
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.preprocess import plain_loop
from harness.project import copy_repository, stage_env
from ich.core.labels import LABELS
from ich.core.params import SynthesizeParams
from ich.data.index import read_header
from ich.data.synth import generate

_SCRIPT_SECONDS = re.compile(r"preprocess: .* in ([0-9.]+) s")
_DVC_STAGES = ("copy", "preprocess")
_BLOOD_CENTER = 80


def _load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _sampled_table(dicom_dir: Path, labels_csv: Path) -> pd.DataFrame:
    """The sample stage's table for every DICOM: labels from the long CSV, ids from the headers, a split."""
    long = pd.read_csv(labels_csv, dtype={"ID": str})
    long = long.drop_duplicates("ID")
    parts = long["ID"].str.rsplit("_", n=1, expand=True)
    wide = long.assign(image=parts[0], label=parts[1]).pivot(index="image", columns="label", values="Label")
    rows = []
    for number, path in enumerate(sorted(dicom_dir.glob("*.dcm"))):
        header = read_header(path.stem, dicom_dir)
        if header.row is None:
            continue
        split = "val" if number % 10 == 8 else "test" if number % 10 == 9 else "train"
        rows.append({**header.row, **{label: int(wide.at[path.stem, label]) for label in LABELS}, "split": split})
    return pd.DataFrame(rows)


def make_project(work: Path, images: int, dicom_size: int, image_size: int) -> tuple[Path, Path]:
    """A repository copy with `images` DICOMs in data/dicom (by `dvc repro copy`); returns (project, dicom_dir)."""
    slices = 20
    config = SynthesizeParams(
        patients=-(-images // slices),
        slices_per_series=slices,
        image_size=dicom_size,
        nonsquare_fraction=0.0,
        corrupt_files=0,
        missing_files=0,
        duplicate_rows=0,
        invalid_id_images=0,
    )
    generate(config, work / "src")
    source = work / "src" / "stage_2_train"
    project = work / "project"
    project.mkdir()
    copy_repository(project, {"data": {"dicom_dir": str(source)}, "preprocess": {"image_size": image_size}})
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    pipeline["stages"] = {name: pipeline["stages"][name] for name in _DVC_STAGES}
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (project / "data").mkdir(exist_ok=True)
    sampled = _sampled_table(source, work / "src" / "stage_2_train.csv").head(images)  # `copy` links only these
    sampled.to_csv(project / "data" / "sampled.csv", index=False)
    (project / "data" / "index_quarantine.csv").write_text("ID,reason\n")
    _dvc(["repro", "copy"], project)
    return project, project / "data" / "dicom"


def _dvc(args: list[str], project: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, capture_output=True, text=True, env=stage_env())
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def time_stage(project: Path, repeat: int) -> tuple[float, float]:
    """One `dvc repro preprocess` after a param change; returns (wall seconds, the stage script's own seconds)."""
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["preprocess"]["windows"][0]["center"] = _BLOOD_CENTER + repeat + 1  # new PNG bytes, the same work
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    log = _dvc(["repro", "preprocess"], project)
    seconds = time.perf_counter() - start
    if "Running stage 'copy'" in log or "Running stage 'preprocess'" not in log:
        raise SystemExit(f"expected dvc to run preprocess alone:\n{log}")
    match = _SCRIPT_SECONDS.search(log)
    return seconds, float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--dicom-size", type=int, default=512, help="side of the synthetic DICOMs (RSNA: 512)")
    parser.add_argument("--image-size", type=int, default=256, help="preprocess.image_size (seed: 256)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Invalid value for VR UI")

    work = Path(tempfile.mkdtemp(prefix="ich-bench-stage-"))
    try:
        project, dicom_dir = make_project(work, args.images, args.dicom_size, args.image_size)
        paths = sorted(dicom_dir.glob("*.dcm"))
        for path in paths:  # the page cache holds every DICOM for both sides
            path.read_bytes()
        plain_times, stage_times, script_times, loads = [], [], [], []
        for repeat in range(args.repeats):
            loads.append(_load())
            out = work / f"plain-{repeat}"
            out.mkdir()
            start = time.perf_counter()
            plain_loop(paths, out, args.image_size)
            plain_times.append(time.perf_counter() - start)
            seconds, script = time_stage(project, repeat)
            stage_times.append(seconds)
            script_times.append(script)
        pngs = list((project / "data" / "png").glob("*.png"))
        png_bytes = sum(path.stat().st_size for path in pngs)
        plain_bytes = sum(path.stat().st_size for path in (work / "plain-0").glob("*.png"))
        plain, stage, script = (statistics.median(times) for times in (plain_times, stage_times, script_times))
        print(
            f"files: {len(paths)} DICOMs {args.dicom_size}px -> PNG {args.image_size}px, {os.cpu_count()} core(s), "
            f"median of {args.repeats}, load before each repeat: {'; '.join(loads)}"
        )
        print(f"plain loop (pydicom + numpy + PIL, 1 process): {plain:7.2f} s  {len(paths) / plain:7.1f} images/s")
        print(f"dvc repro preprocess, end to end:              {stage:7.2f} s  {len(paths) / stage:7.1f} images/s")
        print(f"  stage script (its log):                      {script:7.2f} s  {len(paths) / script:7.1f} images/s")
        print(f"  DVC (startup, checks, hashing, caching):     {stage - script:7.2f} s")
        print(
            f"PNG bytes: stage {png_bytes / len(pngs) / 1024:.1f} KiB/file, plain loop (PIL) "
            f"{plain_bytes / len(pngs) / 1024:.1f} KiB/file"
        )
        print(f"speed-up, end to end: {plain / stage:.2f}x   (stage script alone: {plain / script:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
