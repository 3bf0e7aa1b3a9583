"""`copy.mode: manifest`: the sampled DICOMs recorded by size and SHA-256 instead of linked, and preprocess reading
the sources checked against it."""

import hashlib

import numpy as np

from ich.core.quarantine import FILE_MISSING, SOURCE_CHANGED
from ich.data.copy import manifest_of
from ich.data.preprocess import process_many
from tests.helpers import ct_dicom_bytes


def _sources(folder, count=4):
    folder.mkdir()
    rng = np.random.default_rng(0)
    ids = [f"ID_{index:02x}" for index in range(count)]
    for image_id in ids:
        (folder / f"{image_id}.dcm").write_bytes(ct_dicom_bytes(rng.integers(900, 1200, size=(16, 16))))
    return ids


def test_manifest_lists_size_and_sha256_of_each_file_and_the_missing(tmp_path):
    ids = _sources(tmp_path / "src")
    manifest, missing = manifest_of([*ids[:2], "ID_ff", *ids[2:]], tmp_path / "src", workers=2)
    assert missing == ["ID_ff"]
    assert list(manifest["ID"]) == ids
    for row in manifest.itertuples():
        data = (tmp_path / "src" / f"{row.ID}.dcm").read_bytes()
        assert row.size == len(data) and row.sha256 == hashlib.sha256(data).hexdigest()


def test_preprocess_from_a_manifest_quarantines_changed_and_missing_files(tmp_path):
    ids = _sources(tmp_path / "src")
    manifest, _ = manifest_of(ids, tmp_path / "src")
    digests = dict(zip(manifest["ID"], manifest["sha256"]))
    changed = tmp_path / "src" / f"{ids[1]}.dcm"
    changed.write_bytes(changed.read_bytes()[:-2] + b"\x00\x01")  # one pixel differs
    items = [(image_id, digests[image_id]) for image_id in ids] + [("ID_ee", None)]
    results = list(process_many(items, tmp_path / "src", None, image_size=8, workers=1, manifest=True))
    reasons = {result.image_id: result.reason for result in results}
    assert reasons == {ids[0]: None, ids[1]: SOURCE_CHANGED, ids[2]: None, ids[3]: None, "ID_ee": FILE_MISSING}
    made = [result for result in results if result.reason is None]
    assert all(result.png is not None and result.png.startswith(b"\x89PNG") for result in made)
    assert not list(tmp_path.glob("**/*.png"))  # bytes returned to the caller, nothing written
