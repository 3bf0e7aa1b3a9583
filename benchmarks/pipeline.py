"""Benchmark: wall time of each stage of the demo, and of a no-op `dvc repro`.

Runs in a temporary copy of the repository (the workspace is not touched):

    python -m benchmarks.pipeline            # the demo's params.yaml
    python -m benchmarks.pipeline --noop-only  # only the no-op `dvc repro`, in this (reproduced) workspace
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_FOLDERS = ("data/", "models/", "dvclive/", "plots/", "checkpoints/")


def stage_env(extra: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment for `dvc` commands: the stages' `python` is this interpreter, activated or not."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVCLIVE_TEST": "false", "PYTHONUNBUFFERED": "1", **(extra or {})}
    for name in unset:
        env.pop(name, None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def copy_repository(target: Path, params: dict | None = None) -> Path:
    """Copy the repository's source (tracked and untracked, not ignored; no outputs, no dvc.lock) into a fresh
    git repo at ``target``, with ``params`` ({section: {name: value}}) overriding params.yaml."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not name.startswith(OUTPUT_FOLDERS) and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    if params:
        values = yaml.safe_load((target / "params.yaml").read_text())
        for section, overrides in params.items():
            values[section].update(overrides)
        (target / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "b"]):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    return target


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
        print(f"no-op dvc repro: median {statistics.median(noop):.2f} s of {args.noop_repeats} "
              f"(min {min(noop):.2f}, max {max(noop):.2f})")
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
