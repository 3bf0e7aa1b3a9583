"""A data stage killed with SIGKILL mid-way leaves nothing that looks complete, and `dvc repro` then ends with
the same outputs as an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import yaml

from tests.project import copy_repository, dvc, kill_group, stage_env

PARAMS = {
    "synthesize": {"patients": 40, "slices_per_series": 10, "image_size": 256, "duplicate_rows": 6},
    "sample": {"per_label": 60},
    "preprocess": {"image_size": 64, "max_quarantine_fraction": 0.2, "workers": 1},
}
PREPROCESS_OUTS = ("data/png", "data/split", "data/quarantine.csv")


def _hashes(project):
    outs = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["preprocess"]["outs"]
    return {out["path"]: out["md5"] for out in outs}


def test_sigkilled_preprocess_is_finished_by_the_next_repro(tmp_path):
    project = copy_repository(tmp_path / "repo", PARAMS)
    dvc("repro", "copy", cwd=project)
    png_dir = project / "data/png"
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "preprocess"],
        cwd=project,
        env=stage_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while not (png_dir.is_dir() and sum(1 for _ in png_dir.glob("ID_*.png")) >= 30):
            assert process.poll() is None, "preprocess finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        kill_group(process)

    # Killed mid-way: some PNGs, each one complete; no metadata, no quarantine list, nothing in dvc.lock.
    written = list(png_dir.glob("ID_*.png"))
    sampled = (project / "data/sampled.csv").read_text().count("\n") - 1
    assert 30 <= len(written) < sampled
    assert all(cv2.imread(str(path)) is not None for path in written)
    assert not (project / "data/split").exists() and not (project / "data/quarantine.csv").exists()
    assert "preprocess" not in yaml.safe_load((project / "dvc.lock").read_text())["stages"]

    result = dvc("repro", "preprocess", cwd=project)
    assert "Running stage 'preprocess'" in result.stdout
    after_kill = _hashes(project)
    assert not list(png_dir.glob(".*.tmp"))  # no leftovers of the killed writes
    dvc("repro", "--force", "--single-item", "preprocess", cwd=project)  # an uninterrupted run
    assert _hashes(project) == after_kill
