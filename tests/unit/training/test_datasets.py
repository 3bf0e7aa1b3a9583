import cv2
import numpy as np
import pandas as pd
import pytest

from ich.core.images import load_table
from ich.training.datasets import make_dataset


def test_dataset_scales_to_unit_range_and_keeps_labels(tmp_path):
    paths = []
    for index, value in enumerate((0, 255, 51)):
        path = tmp_path / f"ID_{index}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), value, dtype=np.uint8))
        paths.append(str(path))
    labels = np.eye(3, dtype=np.float32)
    images, targets = next(iter(make_dataset(paths, labels, 8, 3, shuffle=False, seed=0)))
    assert images.shape == (3, 8, 8, 3) and images.dtype.name == "float32"
    np.testing.assert_allclose(images.numpy()[:, 0, 0, 0], [0.0, 1.0, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(targets.numpy(), labels)


def test_shuffle_is_seeded(tmp_path):
    paths = []
    for index in range(12):
        path = tmp_path / f"ID_{index:x}.png"
        cv2.imwrite(str(path), np.full((4, 4, 3), index, dtype=np.uint8))
        paths.append(str(path))
    labels = np.arange(12, dtype=np.float32)[:, None]

    def order(seed):
        return np.concatenate([t.numpy()[:, 0] for _, t in make_dataset(paths, labels, 4, 4, True, seed)])

    assert (order(1) == order(1)).all() and not (order(1) == order(2)).all()


def test_load_table_rejects_ids_that_would_be_paths(tmp_path):
    csv = tmp_path / "split.csv"
    pd.DataFrame({"ID": ["ID_ab", "ID_../../x"], "any": [0, 1]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="invalid image IDs"):
        load_table(csv, tmp_path)
    pd.DataFrame({"ID": ["ID_ab_aug1"], "any": [0]}).to_csv(csv, index=False)
    assert load_table(csv, tmp_path, augmented=True)["path"].iloc[0].endswith("ID_ab_aug1.png")


def _shards_and_files(tmp_path, count=10):
    from ich.core.images import ImageStore, ShardSet

    (tmp_path / "files").mkdir()
    with ShardSet(tmp_path / "shards", 4) as shards:
        for index in range(count):
            image = np.full((4, 4, 3), index * 10, dtype=np.uint8)
            image[0, 0] = (index, 255 - index, 3)
            ok, data = cv2.imencode(".png", image)
            image_id = f"ID_{index:x}"
            (tmp_path / "files" / f"{image_id}.png").write_bytes(data.tobytes())
            shards.add("train", image_id, data.tobytes())
    ids = [f"ID_{index:x}" for index in range(count)]
    return ImageStore.open(tmp_path / "files").locate(ids), ImageStore.open(tmp_path / "shards").locate(ids)


def _epochs(dataset, epochs):
    return [np.concatenate([images.numpy() for images, _ in dataset]) for _ in range(epochs)]


def test_shards_give_the_same_images_and_labels_as_files(tmp_path):
    files, shards = _shards_and_files(tmp_path)
    labels = np.arange(10, dtype=np.float32)[:, None]
    for cache in (True, False):
        a = [(x.numpy(), y.numpy()) for x, y in make_dataset(files, labels, 4, 3, False, 0, cache)]
        b = [(x.numpy(), y.numpy()) for x, y in make_dataset(shards, labels, 4, 3, False, 0, cache)]
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # 2.5D: neighbours composed from shards as from files
    before, after = files.iloc[[0, *range(9)]], files.iloc[[*range(1, 10), 9]]
    before_s, after_s = shards.iloc[[0, *range(9)]], shards.iloc[[*range(1, 10), 9]]
    x_files = np.concatenate([x.numpy() for x, _ in make_dataset(files, labels, 4, 5, False, 0, False, (before, after))])
    x_shards = np.concatenate([x.numpy() for x, _ in make_dataset(shards, labels, 4, 5, False, 0, False, (before_s, after_s))])
    np.testing.assert_array_equal(x_files, x_shards)
    np.testing.assert_allclose(x_files[3, 1, 1], [30 / 255, 20 / 255, 40 / 255], rtol=1e-6)


def test_streamed_shuffle_is_a_seeded_permutation_each_epoch_with_matching_labels(tmp_path):
    _, shards = _shards_and_files(tmp_path)
    labels = np.arange(10, dtype=np.float32)[:, None]

    def run(seed):
        dataset = make_dataset(shards, labels, 4, 4, True, seed, cache=False)
        assert int(dataset.cardinality()) == 3  # known: learning-rate schedules count steps by it
        epochs = []
        for _ in range(2):
            pairs = [(x.numpy(), y.numpy()) for x, y in dataset]
            order = np.concatenate([y[:, 0] for _, y in pairs]).astype(int)
            pixels = np.concatenate([x[:, 0, 0, 2] for x, _ in pairs])  # BGR (index, ...) written: blue in RGB
            np.testing.assert_allclose(pixels * 255, order, atol=1e-3)  # each image with its own label
            epochs.append(order.tolist())
        return epochs

    first = run(7)
    assert all(sorted(order) == list(range(10)) for order in first)
    assert first[0] != first[1]  # a new order every epoch
    assert run(7) == first  # the same orders every run


def test_cache_plan_keeps_what_fits_the_budget():
    from ich.training.datasets import plan_cache

    # 64 px RGB = 12,288 bytes an image; a 1 MiB budget holds 85 of them.
    budget = 2**20 / 2**30
    assert plan_cache([80, 10], 64, "auto", budget) == [True, False]  # 80 fit; 5 more would, 10 do not
    assert plan_cache([80, 5], 64, "auto", budget) == [True, True]
    assert plan_cache([100, 10], 64, "auto", budget) == [False, True]
    assert plan_cache([100, 10], 64, True, budget) == [True, True]
    assert plan_cache([1, 1], 64, False, 100.0) == [False, False]
