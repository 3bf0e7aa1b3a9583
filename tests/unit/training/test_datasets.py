import cv2
import numpy as np
import pandas as pd
import pytest

from ich.training.datasets import load_table, make_dataset


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
