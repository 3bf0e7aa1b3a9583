"""Benchmark: wall time of each stage of the demo, and of a no-op `dvc repro`.

Runs in a temporary copy of the repository (the workspace is not touched):

    python -m benchmarks.pipeline            # the demo's params.yaml
    python -m benchmarks.pipeline --noop-only  # only the no-op `dvc repro`, in this (reproduced) workspace
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harness.project import ROOT, copy_repository, stage_env


def _noop_repros(project: Path, repeats: int) -> list[float]:
    """Wall times of `dvc repro` with nothing to do (fails if any stage runs)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"], cwd=project, check=True, capture_output=True, text=True, env=stage_env()
        )
        times.append(time.perf_counter() - start)
        if "Running stage" in result.stdout:
            raise SystemExit(f"dvc repro was not a no-op in {project}:\n{result.stdout}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop-repeats", type=int, default=5)
    parser.add_argument("--noop-only", action="store_true", help="time no-op repros of this workspace only")
    args = parser.parse_args()
    if args.noop_only:
        noop = _noop_repros(ROOT, args.noop_repeats)
        print(
            f"no-op dvc repro: median {statistics.median(noop):.2f} s of {args.noop_repeats} "
            f"(min {min(noop):.2f}, max {max(noop):.2f})"
        )
        return
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    with tempfile.TemporaryDirectory(prefix="ich-pipeline-") as work:
        project = Path(work)
        copy_repository(project)
        dvc = [sys.executable, "-m", "dvc"]
        rows = []
        for stage in stages:
            start = time.perf_counter()
            subprocess.run([*dvc, "repro", "--single-item", stage], cwd=project, check=True, capture_output=True, env=stage_env())
            rows.append((stage, time.perf_counter() - start))
        noop = _noop_repros(project, args.noop_repeats)
    print("stage        wall time (s)")
    for stage, seconds in rows:
        print(f"{stage:12s} {seconds:8.1f}")
    print(f"{'total':12s} {sum(seconds for _, seconds in rows):8.1f}")
    print(f"no-op dvc repro: median {statistics.median(noop):.2f} s of {args.noop_repeats}")


if __name__ == "__main__":
    main()
