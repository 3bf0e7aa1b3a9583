"""Helpers of the end-to-end tests: temporary DVC projects (a copy of the repository's source in a fresh git
repo, made by :func:`harness.project.copy_repository`) and the commands run in them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from harness.project import ROOT, copy_repository, stage_env

__all__ = ["ROOT", "DATA_STAGES", "copy_repository", "stage_env", "run", "dvc", "lock_hashes", "kill_group", "free_ports"]

DATA_STAGES = ("synthesize", "index", "split", "sample", "copy", "preprocess")


def run(args, cwd, check=True, env=None, unset=()):
    """Run a command in ``cwd`` (see :func:`stage_env`); ``env`` adds variables."""
    result = subprocess.run(args, cwd=cwd, env=stage_env(env, unset), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(*args, cwd, check=True, env=None):
    return run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=check, env=env)


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
