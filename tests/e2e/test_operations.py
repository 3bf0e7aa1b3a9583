"""DVC operations on a real project: kill-and-resume of training, push/pull through a remote, a queued sweep."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.project import copy_repository, dvc, free_ports, kill_group, run, stage_env

# The whole module shares one killed-and-resumed tiny run (~3 min of setup): CI runs it in its slow pass, so the
# default suite stays within ~10 minutes on 2 cores.
pytestmark = pytest.mark.slow

TINY_SINGLE = {
    "synthesize": {"patients": 16, "slices_per_series": 8, "image_size": 64, "duplicate_rows": 6},
    "sample": {"per_label": 12},
    "preprocess": {"image_size": 32, "max_quarantine_fraction": 0.2},
    "augment": {"target_per_label": 14},
    "model": {"arch": "efficientnetv2"},
    "train": {"epochs": 4, "batch_size": 8, "early_stopping_patience": 10},
    "sequence": {"epochs": 3, "units": 4, "projection": 4},
    "evaluate": {"montage_images": 4},
}


def _state(project: Path) -> dict:
    try:
        return json.loads((project / "checkpoints/train/state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _tsv_steps(path: Path) -> list[int]:
    frame = pd.read_csv(path, sep="\t")
    return frame["step"].tolist()


@pytest.fixture(scope="module")
def resumed_project(tmp_path_factory):
    """A project whose `dvc repro` was SIGKILLed after two training epochs and then rerun to the end."""
    project = copy_repository(tmp_path_factory.mktemp("work") / "repo", TINY_SINGLE)
    dvc("repro", "augment", cwd=project)
    log_path = project.parent / "killed.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=project,
        env=stage_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while _state(project).get("networks", {}).get("model", {}).get("epoch", 0) < 2:
            assert process.poll() is None, "training ended before it could be killed:\n" + log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no epoch finished within 300 s"
            time.sleep(0.2)
    finally:
        kill_group(process)  # dvc and the stage's python, like a lost machine
    killed_at = _state(project)["networks"]["model"]["epoch"]
    # DVC's own lock of the killed repro is stale; dvc repro notices and takes it over.
    result = dvc("repro", cwd=project)
    run(["git", "add", "-A"], cwd=project)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "repro"], cwd=project)
    return project, killed_at, result.stdout + result.stderr


def test_killed_training_resumes_from_its_last_finished_epoch(resumed_project):
    project, killed_at, log = resumed_project
    assert killed_at >= 2
    assert f"resumed after epoch {killed_at}" in log
    assert f"Epoch {killed_at + 1}/4" in log and "Epoch 1/4" not in log
    # dvclive continued its step count: one row per epoch 0..3, none twice, none missing.
    assert _tsv_steps(project / "dvclive/train/plots/metrics/model/train/loss.tsv") == [0, 1, 2, 3]
    assert json.loads((project / "dvclive/train/metrics.json").read_text())["step"] == 4
    # The finished run leaves only its state file; models and metrics are complete.
    assert sorted(path.name for path in (project / "checkpoints/train").iterdir()) == ["state.json"]
    assert _state(project)["complete"] is True
    assert (project / "models/cnn/model.keras").exists() and (project / "metrics/evaluate.json").exists()
    assert dvc("status", cwd=project).stdout.strip().endswith("Data and pipelines are up to date.")


def test_the_finished_run_recorded_the_fingerprint_of_its_stage_inputs(resumed_project, tmp_path):
    from ich.training.resume import ResumeStore, stage_fingerprint

    project, _, _ = resumed_project
    state = _state(project)
    assert state["fingerprint"] == stage_fingerprint("train", root=project)
    # An interrupted state of this fingerprint resumes; under any other fingerprint it is discarded.
    (tmp_path / "state").mkdir()
    (tmp_path / "state/state.json").write_text(json.dumps({**state, "complete": False, "networks": {"model": {"epoch": 1}}}))
    assert not ResumeStore(tmp_path / "state", "another fingerprint").resuming
    (tmp_path / "state/state.json").write_text(json.dumps({**state, "complete": False, "networks": {"model": {"epoch": 1}}}))
    assert ResumeStore(tmp_path / "state", state["fingerprint"]).resuming


def test_stage_outputs_are_hardlinked_to_the_cache_not_copied(resumed_project):
    # With reflink (or copy) anywhere in cache.type, DVC leaves a pipeline's outputs as copies of their
    # cache files on ext4 (treeverse/dvc#10549): the committed `hardlink,symlink` links them.
    project, _, _ = resumed_project
    cached = {(path.stat().st_dev, path.stat().st_ino) for path in (project / ".dvc/cache").rglob("*") if path.is_file()}
    for folder in ("data/synthetic", "data/dicom", "data/png", "data/augmented", "models"):
        files = [path for path in (project / folder).rglob("*") if path.is_file()]
        assert files, folder
        unlinked = [path for path in files if (path.stat().st_dev, path.stat().st_ino) not in cached]
        assert not unlinked, f"{len(unlinked)} of {len(files)} files in {folder} are copies, e.g. {unlinked[0]}"


def test_push_then_pull_into_a_second_clone_restores_every_file(resumed_project):
    project, _, _ = resumed_project
    config = (project / ".dvc/config").read_text()
    assert "remote = storage" in config  # the committed default remote needs no account
    dvc("push", cwd=project)
    storage = project.parent / "ich-dvc-storage"
    assert storage.is_dir() and any(storage.rglob("*"))
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], cwd=project.parent)
    dvc("pull", cwd=clone)
    for folder in ("data/png", "data/augmented", "data/dicom", "models"):
        original = sorted(p.relative_to(project) for p in (project / folder).rglob("*") if p.is_file())
        copied = sorted(p.relative_to(clone) for p in (clone / folder).rglob("*") if p.is_file())
        assert original == copied and original
        for name in original:
            assert (project / name).read_bytes() == (clone / name).read_bytes()
    assert dvc("status", cwd=clone).stdout.strip().endswith("Data and pipelines are up to date.")


def test_queued_two_point_sweep_runs_and_exp_show_lists_both(resumed_project):
    project, _, _ = resumed_project
    # sequence.seed: only sequence and evaluate rerun, and the final predictions (the headline) change
    dvc("exp", "run", "--queue", "-S", "sequence.seed=1,2", cwd=project)
    dvc("queue", "start", "-j", "1", cwd=project)
    deadline = time.monotonic() + 600
    while True:
        status = dvc("queue", "status", cwd=project).stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 2, status + dvc("queue", "logs", "--help", cwd=project).stdout
    shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    experiments = [exp for entry in shown for exp in (entry.get("experiments") or [])]
    seeds, losses = set(), set()
    for experiment in experiments:
        for revision in experiment["revs"]:
            data = revision["data"]
            seeds.add(data["params"]["params.yaml"]["data"]["sequence"]["seed"])
            metrics = data["metrics"]["metrics/evaluate.json"]["data"]
            assert metrics["any"]["auc"] is not None
            losses.add(metrics["weighted_log_loss"])
    assert {1, 2} <= seeds
    # Two experiments compared by name: metrics and plots of both.
    names = [experiment["name"] for experiment in experiments if experiment.get("name")][:2]
    assert len(names) == 2
    metrics_diff = json.loads(dvc("metrics", "diff", *names, "--json", cwd=project).stdout)
    assert "metrics/evaluate.json" in metrics_diff
    plots = json.loads(dvc("plots", "diff", *names, "--json", "--split", cwd=project).stdout)
    assert plots and all(name in json.dumps(plots) for name in names)
    table = dvc("exp", "show", "--csv", cwd=project).stdout
    assert "sequence.seed" in table and "any.f1" in table and "weighted_log_loss" in table


@pytest.fixture()
def s3_endpoint():
    """A real S3-compatible server (moto) on loopback, with one empty bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    )
    client.create_bucket(Bucket="ich-artifacts")
    yield endpoint, client
    server.stop()


def _configure_s3(project: Path, endpoint: str) -> None:
    dvc("remote", "add", "s3", "s3://ich-artifacts/dvcstore", cwd=project)
    dvc("remote", "modify", "s3", "endpointurl", endpoint, cwd=project)
    # Credentials go to .dvc/config.local (never committed), as the README shows.
    dvc("remote", "modify", "--local", "s3", "access_key_id", "test", cwd=project)
    dvc("remote", "modify", "--local", "s3", "secret_access_key", "test", cwd=project)


def test_push_and_pull_through_an_s3_server(resumed_project, s3_endpoint, tmp_path):
    project, _, _ = resumed_project
    endpoint, client = s3_endpoint
    _configure_s3(project, endpoint)
    assert "secret_access_key" not in (project / ".dvc/config").read_text()
    dvc("push", "-r", "s3", cwd=project)
    stored = client.list_objects_v2(Bucket="ich-artifacts", Prefix="dvcstore/")
    assert stored["KeyCount"] > 0
    clone = tmp_path / "s3-clone"
    run(["git", "clone", "-q", str(project), str(clone)], cwd=tmp_path)
    _configure_s3(clone, endpoint)
    dvc("pull", "-r", "s3", cwd=clone)
    for name in ("models/cnn/model.keras", "data/index.csv", "data/split/test.csv"):
        assert (clone / name).read_bytes() == (project / name).read_bytes()
    pngs = sorted(p.name for p in (clone / "data/png").glob("*.png"))
    assert pngs == sorted(p.name for p in (project / "data/png").glob("*.png")) and pngs
    assert dvc("status", cwd=clone).stdout.strip().endswith("Data and pipelines are up to date.")
