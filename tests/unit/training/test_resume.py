"""The resume fingerprint: what shaped a training run, read from the stage's declaration in dvc.yaml."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml

from ich.training.resume import ResumeStore, stage_fingerprint

DVC_YAML = {
    "stages": {
        "train": {
            "cmd": "python -m stages.train",
            "deps": ["data/png", "data/split/train.csv", "stages/train.py", "${data.extra}"],
            "params": ["model", "preprocess.image_size"],
            "outs": ["models"],
        }
    }
}
PARAMS = {
    "data": {"extra": "data/extra.txt"},
    "model": {"arch": "cascade", "dropout": 0.2},
    "preprocess": {"image_size": 64, "workers": 0},
}


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "data/png").mkdir(parents=True)
    (tmp_path / "data/split").mkdir()
    (tmp_path / "stages").mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"data/png/ID_{index:02x}.png"), (rng.random((8, 8, 3)) * 255).astype(np.uint8))
    (tmp_path / "data/split/train.csv").write_text("ID,any\nID_00,1\n")
    (tmp_path / "stages/train.py").write_text("print('train')\n")
    (tmp_path / "data/extra.txt").write_text("x\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return tmp_path


def _set_params(project, section, key, value):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def test_a_changed_png_with_unchanged_tables_is_another_run(project):
    before = stage_fingerprint("train", root=project)
    assert stage_fingerprint("train", root=project) == before  # stable
    png = project / "data/png/ID_01.png"
    image = cv2.imread(str(png))
    image[0, 0] = (image[0, 0].astype(int) + 1) % 256  # one pixel, as a windowing change would do to every image
    cv2.imwrite(str(png), image)
    changed = stage_fingerprint("train", root=project)
    assert changed != before
    # A state saved under the old fingerprint is not resumed by the run over the new images.
    (project / "checkpoints").mkdir()
    interrupted = {"fingerprint": before, "complete": False, "networks": {"stage1": {"epoch": 2}}, "live_step": 2}
    (project / "checkpoints/state.json").write_text(json.dumps(interrupted))
    assert ResumeStore(project / "checkpoints", before).resuming
    assert not ResumeStore(project / "checkpoints", changed).resuming


def test_params_of_the_stage_count_and_others_do_not(project):
    before = stage_fingerprint("train", root=project)
    _set_params(project, "preprocess", "workers", 4)  # not a param of the stage
    assert stage_fingerprint("train", root=project) == before
    _set_params(project, "model", "dropout", 0.3)
    assert stage_fingerprint("train", root=project) != before


def test_code_a_new_file_and_an_interpolated_dep_count(project):
    fingerprints = {stage_fingerprint("train", root=project)}
    (project / "stages/train.py").write_text("print('train!')\n")
    fingerprints.add(stage_fingerprint("train", root=project))
    cv2.imwrite(str(project / "data/png/ID_10.png"), np.zeros((8, 8, 3), np.uint8))
    fingerprints.add(stage_fingerprint("train", root=project))
    (project / "data/extra.txt").write_text("y\n")
    fingerprints.add(stage_fingerprint("train", root=project))
    assert len(fingerprints) == 4


def test_a_missing_dep_says_which_and_what_to_do(project):
    (project / "data/split/train.csv").unlink()
    with pytest.raises(FileNotFoundError, match="data/split/train.csv.*run the stages before it"):
        stage_fingerprint("train", root=project)
