import cv2
import numpy as np
import pandas as pd
import pytest

from ich.core.ids import is_valid_id
from ich.core.labels import LABELS
from ich.core.params import AugmentParams
from ich.data.augment import build_pipeline, plan_copies, write_augmented

PARAMS = dict(
    seed=0,
    target_per_label=10,
    max_copies_per_image=3,
    hflip_p=0.5,
    vflip_p=0.5,
    rotate_limit=15,
    rotate_p=0.5,
    brightness_limit=0.1,
    contrast_limit=0.1,
    brightness_contrast_p=0.5,
    blur_limit=3,
    blur_p=0.5,
    elastic_alpha=20.0,
    elastic_sigma=5.0,
    elastic_p=0.5,
)


def _train():
    rows = []
    for index in range(40):
        labels = {label: 0 for label in LABELS}
        if index < 2:
            labels["epidural"] = labels["any"] = 1
        elif index < 20:
            labels["subdural"] = labels["any"] = 1
        rows.append({"ID": f"ID_{index:02x}", "PatientID": f"P{index}", **labels})
    return pd.DataFrame(rows)


def test_plan_oversamples_minority_within_the_copy_limit():
    plan = plan_copies(_train(), target_per_label=10, max_copies_per_image=3, seed=0)
    # 2 epidural sources x 3 copies at most: 2 + 6 = 8 < 10
    assert plan["epidural"].sum() == 6
    assert plan["source_ID"].value_counts().max() <= 3
    assert all(
        is_valid_id(new, augmented=True) and new.startswith(source + "_aug") for new, source in zip(plan["ID"], plan["source_ID"])
    )
    assert plan["ID"].is_unique
    assert plan.loc[plan["subdural"] == 1].empty  # 18 subdural already >= 10
    pd.testing.assert_frame_equal(plan, plan_copies(_train(), 10, 3, seed=0))


def test_pipeline_is_deterministic_by_seed_and_keeps_shape():
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    first = [build_pipeline(AugmentParams(**PARAMS))(image=image)["image"] for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    assert first[0].shape == image.shape and first[0].dtype == np.uint8
    other = build_pipeline(AugmentParams(**{**PARAMS, "seed": 1}))(image=image)["image"]
    assert not np.array_equal(first[0], other)


def test_params_are_validated():
    with pytest.raises(ValueError, match="hflip_p"):
        AugmentParams(**{**PARAMS, "hflip_p": 1.5})
    with pytest.raises(ValueError, match="blur_limit"):
        AugmentParams(**{**PARAMS, "blur_limit": 4})


def test_write_augmented_reads_transforms_and_writes_each_copy(tmp_path):
    png_dir, output = tmp_path / "png", tmp_path / "augmented"
    png_dir.mkdir()
    output.mkdir()
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0], image[0, :, 1] = 200, 50  # red everywhere, a green top row
    cv2.imwrite(str(png_dir / "ID_0a.png"), image[..., ::-1])  # OpenCV writes BGR

    def upside_down(image):
        return {"image": image[::-1]}

    written = write_augmented([("ID_0a", "ID_0a_aug1"), ("ID_0a", "ID_0a_aug2")], png_dir, output, upside_down)
    assert written == 2
    assert sorted(path.name for path in output.iterdir()) == ["ID_0a_aug1.png", "ID_0a_aug2.png"]
    copy = cv2.imread(str(output / "ID_0a_aug1.png"))[..., ::-1]
    assert copy[..., 0].tolist() == [[200] * 8] * 8
    assert copy[7, :, 1].tolist() == [50] * 8 and copy[:7, :, 1].max() == 0  # the green row is now at the bottom


def test_write_augmented_names_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ID_0b\.png.*rerun `dvc repro preprocess`"):
        write_augmented([("ID_0b", "ID_0b_aug1")], tmp_path, tmp_path, lambda image: {"image": image})
