"""tf.distribute for real: MirroredStrategy on two logical CPU devices, and MultiWorkerMirroredStrategy with
two worker processes on loopback (TF_CONFIG), each training one epoch of a tiny model through ``fit_phases``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.project import ROOT, free_ports


def _worker(strategy: str, output, cpus: int = 1, tf_config: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DVCLIVE_TEST": "false", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_worker", strategy, str(output), str(cpus)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen, timeout: float = 300) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    return _result(_worker("mirrored", tmp_path_factory.mktemp("mirrored"), cpus=2))


def test_mirrored_strategy_trains_on_two_logical_cpus(mirrored):
    assert mirrored["strategy"] == "MirroredStrategy" and mirrored["replicas"] == 2
    # compile() ran inside the strategy's scope: the optimizer's slots are mirrored like the weights.
    assert mirrored["optimizer_variable_types"] == ["MirroredVariable"]
    assert mirrored["optimizer_iterations"] == 4  # 64 samples / global batch 16


def test_two_workers_on_loopback_train_in_lockstep(tmp_path, mirrored):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    workers = [
        _worker("multi_worker", tmp_path, tf_config={"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(2)
    ]
    results = [_result(process) for process in workers]
    assert [result["chief"] for result in results] == [True, False]
    for result in results:
        assert result["strategy"] == "CollectiveAllReduceStrategy" and result["replicas"] == 2
        assert result["optimizer_iterations"] == 4
    # Both workers hold the same weights after the epoch, and the same as two mirrored replicas would.
    assert results[0]["weights_sum"] == pytest.approx(results[1]["weights_sum"], rel=1e-6)
    assert results[0]["weights_sum"] == pytest.approx(mirrored["weights_sum"], rel=1e-5)
    # Only the chief writes the run's outputs.
    assert json.loads((tmp_path / "checkpoints/state.json").read_text())["complete"] is True
    assert not (tmp_path / "non-chief/checkpoints/state.json").exists()
