"""The shards layout: tar shards in the WebDataset layout and their index, read back by the standard library's
tarfile and by hand; the one reader over either layout."""

import io
import tarfile

import cv2
import numpy as np
import pytest

from ich.core.images import SHARD_INDEX, ImageStore, ShardSet, ShardWriter, decode_png


def _png(value: int, size: int = 6) -> bytes:
    image = np.zeros((size, size, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = value, (value * 7) % 256, 255 - value
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


IMAGES = {f"ID_{index:03x}": _png(index * 20) for index in range(7)}


def _write(folder, per_shard=3):
    with ShardSet(folder, per_shard) as shards:
        for image_id, data in IMAGES.items():
            shards.add("train" if image_id < "ID_005" else "val", image_id, data)
    return folder


def test_shards_are_tar_files_of_png_members_in_order(tmp_path):
    _write(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        SHARD_INDEX,
        "train-00000.tar",
        "train-00001.tar",
        "val-00000.tar",
    ]
    members = {}
    for shard, expected in (("train-00000.tar", 3), ("train-00001.tar", 2), ("val-00000.tar", 2)):
        with tarfile.open(tmp_path / shard) as archive:  # the standard library's reader, not ours
            names = archive.getnames()
            assert len(names) == expected
            members.update({name: archive.extractfile(name).read() for name in names})
    assert members == {f"{image_id}.png": data for image_id, data in IMAGES.items()}
    assert list(members) == [f"{image_id}.png" for image_id in IMAGES]  # in the order added


def test_the_index_points_at_each_images_bytes(tmp_path):
    _write(tmp_path)
    store = ImageStore.open(tmp_path)
    assert store.layout == "shards" and len(store) == len(IMAGES)
    locations = store.locate(list(IMAGES))
    for (image_id, data), (path, offset, size) in zip(IMAGES.items(), locations.itertuples(index=False)):
        with open(path, "rb") as handle:
            handle.seek(offset)
            assert handle.read(size) == data
        assert store.read(image_id) == data
    for image_id, data in IMAGES.items():
        image = store.rgb(image_id)
        reference = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(image, reference)


def test_shards_are_byte_for_byte_reproducible(tmp_path):
    first, second = _write(tmp_path / "a"), _write(tmp_path / "b")
    for path in first.iterdir():
        assert path.read_bytes() == (second / path.name).read_bytes(), path.name


def test_files_layout_and_bad_ids(tmp_path):
    for image_id, data in IMAGES.items():
        (tmp_path / f"{image_id}.png").write_bytes(data)
    store = ImageStore.open(tmp_path)
    assert store.layout == "files"
    location = store.locate(["ID_002"]).iloc[0]
    assert (location["path"], location["offset"], location["size"]) == (str(tmp_path / "ID_002.png"), 0, -1)
    assert store.read("ID_002") == IMAGES["ID_002"]
    with pytest.raises(ValueError, match="ID_"):
        store.locate(["../../etc/passwd"])
    with pytest.raises(ValueError, match="ID_"):
        ShardWriter(tmp_path / "s", "train", 2).add("ID_1/../../x", b"")
    sharded = ImageStore.open(_write(tmp_path / "shards"))
    with pytest.raises(ValueError, match="not in"):
        sharded.locate(["ID_fff"])


def test_a_failure_while_writing_leaves_no_partial_shard_and_no_index(tmp_path):
    with pytest.raises(RuntimeError), ShardSet(tmp_path, 3) as shards:
        for index, (image_id, data) in enumerate(IMAGES.items()):
            if index == 4:
                raise RuntimeError("disk full")
            shards.add("train", image_id, data)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train-00000.tar"]  # finished shards only


def test_a_short_shard_is_a_clear_error(tmp_path):
    _write(tmp_path)
    shard = tmp_path / "val-00000.tar"
    shard.write_bytes(shard.read_bytes()[:600])
    store = ImageStore.open(tmp_path)
    with pytest.raises(OSError, match="ends at byte"):
        store.read("ID_006")
    with pytest.raises(ValueError, match="Cannot read"):
        decode_png(b"not a png", "ID_006")


def test_webdataset_style_reading_of_a_shard_stream(tmp_path):
    # A streaming reader (tarfile in "r|" mode, as WebDataset reads) sees the same members.
    _write(tmp_path)
    with open(tmp_path / "train-00000.tar", "rb") as handle, tarfile.open(fileobj=io.BytesIO(handle.read()), mode="r|") as stream:
        names = [member.name for member in stream]
    assert names == ["ID_000.png", "ID_001.png", "ID_002.png"]
