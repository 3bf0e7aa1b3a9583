"""End to end: the shards layout (`preprocess.layout: shards`, `copy.mode: manifest`) against the files layout, on
the same tiny synthetic set: the same images byte for byte, the same tables, a handful of files for DVC, and (slow)
the same trained model and test predictions."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.e2e.test_pipeline import TINY_FULL
from tests.project import copy_repository, dvc

SHARDED = {
    **TINY_FULL,
    "copy": {"mode": "manifest"},
    "preprocess": {**TINY_FULL["preprocess"], "layout": "shards", "images_per_shard": 20},
}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    made = {}
    for name, params in (("files", TINY_FULL), ("shards", SHARDED)):
        made[name] = copy_repository(tmp_path_factory.mktemp(name), params)
        dvc("repro", "augment", cwd=made[name])
    return made


def _tar_members(folder):
    """Every member of every tar in ``folder``, read with the standard library's tarfile: {name: bytes}."""
    members = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as archive:
            for member in archive.getmembers():
                members[member.name] = archive.extractfile(member).read()
    return members


def test_shards_hold_the_same_images_and_tables_as_png_files(projects):
    files, shards = projects["files"], projects["shards"]
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(
            pd.read_csv(files / f"data/split/{name}.csv"), pd.read_csv(shards / f"data/split/{name}.csv"), check_exact=True
        )
    quarantine = [set(map(tuple, pd.read_csv(p / "data/quarantine.csv").to_numpy())) for p in (files, shards)]
    assert quarantine[0] == quarantine[1]
    for folder in ("data/png", "data/augmented"):
        pngs = {path.name: path.read_bytes() for path in (files / folder).glob("*.png")}
        packed = _tar_members(shards / folder)
        assert pngs and packed == pngs  # same names, same bytes
        assert not list((shards / folder).glob("*.png"))
        # the index points at each member's bytes
        index = pd.read_csv(shards / folder / "shards.csv")
        assert sorted(index["ID"] + ".png") == sorted(pngs)
        for row in index.itertuples():
            with open(shards / folder / row.shard, "rb") as handle:
                handle.seek(row.offset)
                assert handle.read(row.size) == pngs[f"{row.ID}.png"]
        decoded = np.asarray(Image.open(io.BytesIO(packed[sorted(packed)[0]])))
        assert decoded.dtype == np.uint8 and decoded.shape[2] == 3


def test_shards_are_few_files_per_split_and_the_dicoms_a_checked_manifest(projects):
    shards = projects["shards"]
    index = pd.read_csv(shards / "data/png/shards.csv")
    for name in ("train", "val", "test"):
        count = len(pd.read_csv(shards / f"data/split/{name}.csv"))
        tars = sorted(path.name for path in (shards / "data/png").glob(f"{name}-*.tar"))
        assert tars == [f"{name}-{k:05d}.tar" for k in range(-(-count // 20))]
        assert (index["shard"].str.startswith(f"{name}-")).sum() == count
    assert [path.name for path in (shards / "data/dicom").iterdir()] == ["manifest.csv"]
    manifest = pd.read_csv(shards / "data/dicom/manifest.csv")
    sampled = pd.read_csv(shards / "data/sampled.csv")
    source = shards / "data/synthetic/stage_2_train"
    present = [image_id for image_id in sampled["ID"] if (source / f"{image_id}.dcm").is_file()]
    assert list(manifest["ID"]) == present
    for row in manifest.itertuples():
        data = (source / f"{row.ID}.dcm").read_bytes()
        assert (row.size, row.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    status = dvc("status", "--with-deps", "augment", cwd=shards)
    assert "changed" not in status.stdout, status.stdout


@pytest.mark.slow
def test_training_on_shards_gives_the_same_model_and_predictions(projects):
    for project in projects.values():
        dvc("repro", cwd=project)
    predictions = [pd.read_csv(project / "data/predictions/test.csv") for project in projects.values()]
    pd.testing.assert_frame_equal(*predictions, check_exact=True)
    metrics = [(project / "metrics/evaluate.json").read_text() for project in projects.values()]
    assert metrics[0] == metrics[1]
