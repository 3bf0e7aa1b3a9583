"""Benchmark: what DVC costs on one output folder of N files (the shape of `data/png` at scale), and what
`cache.type` does to the disk.

For each N: `dvc add` of the folder (hashing + moving into the cache), `dvc status` with nothing changed
(median of `--repeats`), `dvc status` after one file changed, and the disk used by workspace + cache with
`cache.type` hardlink and copy. With `--demo`: the demo's data stages (`dvc repro augment` on params.yaml)
in a copy of the repository, once per cache.type, and the disk of their outputs with and without the cache.
Runs in temporary repositories:

    python -m benchmarks.dvc_scale --files 1000 10000 50000 --file-kb 48
    python -m benchmarks.dvc_scale --demo
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.project import copy_repository, stage_env


def _run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=stage_env())
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def _disk_bytes(*paths: Path) -> int:
    """Bytes on disk, each inode counted once (hardlinks shared between the paths are not double counted)."""
    seen, total = set(), 0
    for root in paths:
        for path in root.rglob("*"):
            info = path.lstat()
            if path.is_file() and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def measure(count: int, file_kb: int, cache_type: str, repeats: int) -> dict[str, float]:
    dvc = [sys.executable, "-m", "dvc"]
    rng = np.random.default_rng(count)
    with tempfile.TemporaryDirectory(prefix="ich-dvc-scale-") as work:
        project = Path(work)
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        _run([*dvc, "init", "-q"], project)
        _run([*dvc, "config", "cache.type", cache_type], project)
        folder = project / "png"
        folder.mkdir()
        for index in range(count):
            (folder / f"ID_{index:09x}.png").write_bytes(rng.bytes(file_kb * 1024))
        add = _run([*dvc, "add", "png"], project)
        status = statistics.median(_run([*dvc, "status"], project) for _ in range(repeats))
        (folder / "ID_000000000.png").write_bytes(rng.bytes(file_kb * 1024))
        changed = _run([*dvc, "status"], project)
        disk = _disk_bytes(folder, project / ".dvc" / "cache")
    return {"add": add, "status": status, "changed": changed, "disk": disk, "data": count * file_kb * 1024}


DEMO_OUTPUTS = ("data/synthetic", "data/dicom", "data/png", "data/augmented")
DEMO_CACHE_TYPES = ("hardlink,symlink", "reflink,hardlink,symlink,copy")


def measure_demo(cache_type: str) -> dict[str, float]:
    """Disk of the demo's data outputs after `dvc repro augment`, alone and together with the DVC cache."""
    with tempfile.TemporaryDirectory(prefix="ich-dvc-demo-") as work:
        project = Path(work)
        copy_repository(project)
        _run([sys.executable, "-m", "dvc", "config", "--local", "cache.type", cache_type], project)
        seconds = _run([sys.executable, "-m", "dvc", "repro", "augment"], project)
        outputs = [project / name for name in DEMO_OUTPUTS]
        alone = _disk_bytes(*outputs)
        together = _disk_bytes(*outputs, project / ".dvc" / "cache")
    return {"repro": seconds, "outputs": alone, "with_cache": together}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--file-kb", type=int, default=48, help="size of each file (a 256 px PNG is ~55 KB)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--demo", action="store_true", help="measure the demo's data stages instead")
    args = parser.parse_args()
    if args.demo:
        print("cache.type                       repro augment (s)  outputs (MB)  outputs + cache (MB)  ratio")
        for cache_type in DEMO_CACHE_TYPES:
            row = measure_demo(cache_type)
            print(
                f"{cache_type:32s} {row['repro']:17.1f}  {row['outputs'] / 2**20:12.1f}  "
                f"{row['with_cache'] / 2**20:20.1f}  {row['with_cache'] / row['outputs']:5.2f}"
            )
        return
    print("files    cache     dvc add (s)  status (s)  status, 1 changed (s)  add per 1000 (s)  disk / data")
    for count in args.files:
        for cache_type in ("hardlink", "copy"):
            row = measure(count, args.file_kb, cache_type, args.repeats)
            print(
                f"{count:<8d} {cache_type:9s} {row['add']:11.1f}  {row['status']:10.2f}  {row['changed']:21.2f}  "
                f"{1000 * row['add'] / count:16.2f}  {row['disk'] / row['data']:11.2f}"
            )


if __name__ == "__main__":
    main()
