"""Temporary copies of this DVC project, for the tests and the benchmarks: the repository's source in a
fresh git repository, and the environment that `dvc` commands run their stages with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

__all__ = ["ROOT", "OUTPUT_FOLDERS", "stage_env", "copy_repository"]

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
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
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
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "b"],
    ):
        subprocess.run(command, cwd=target, check=True, capture_output=True)
    return target
