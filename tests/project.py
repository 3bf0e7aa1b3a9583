"""Temporary DVC projects for end-to-end tests: a copy of the repository's source in a fresh git repo."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("synthesize", "sample", "copy", "preprocess", "split")


def command_env(extra=None, unset=()) -> dict[str, str]:
    """The environment of a command: this interpreter's venv first on PATH (the stages' ``python``)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVCLIVE_TEST": "false", "PYTHONUNBUFFERED": "1", **(extra or {})}
    for name in unset:
        env.pop(name, None)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run(args, cwd, check=True, env=None, unset=()):
    """Run a command in ``cwd`` (see :func:`command_env`); ``env`` adds variables."""
    result = subprocess.run(args, cwd=cwd, env=command_env(env, unset), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(*args, cwd, check=True, env=None):
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check, env=env)


def make_project(target: Path, overrides: dict) -> Path:
    """Copy the repository's source (tracked and untracked, not ignored) into a fresh git repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file() or name.startswith(("data/", "models/", "dvclive/", "plots/", "checkpoints/")) or name == "dvc.lock":
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name)
    params = yaml.safe_load((target / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], cwd=target)
    run(["git", "add", "-A"], cwd=target)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], cwd=target)
    return target


def lock_hashes(project: Path, stages=DATA_STAGES) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {stage: [(out["path"], out.get("md5")) for out in lock[stage].get("outs", [])] for stage in stages}


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and everything it started, like a lost machine."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group has already exited
        pass
    process.wait()


def free_ports(count: int) -> list[int]:
    """Ports that were free on loopback a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports
