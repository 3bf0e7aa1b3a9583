import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

keras = pytest.importorskip("keras")

from dvclive import Live  # noqa: E402

from ich.data import make_dataset  # noqa: E402
from ich.training import (  # noqa: E402
    LabelAUC,
    WeightedBinaryCrossentropy,
    fit_phases,
    plan_phases,
    positive_weights,
)


def test_weighted_bce_by_hand_and_plain_when_weights_are_one():
    y = np.array([[1.0, 0.0]], dtype=np.float32)
    p = np.array([[0.8, 0.3]], dtype=np.float32)
    loss = WeightedBinaryCrossentropy([3.0, 1.0])
    expected = -(3.0 * np.log(0.8) + np.log(0.7)) / 2
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-5)
    plain = keras.losses.BinaryCrossentropy()
    assert float(WeightedBinaryCrossentropy([1.0, 1.0])(y, p)) == pytest.approx(float(plain(y, p)), rel=1e-4)


def test_positive_weights_are_clipped_ratios():
    targets = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]] * 10, dtype=np.float32)
    assert positive_weights(targets, maximum=2.0) == [2.0, 2.0, 1.0]
    assert positive_weights(targets, maximum=10.0) == [3.0, 3.0, 1.0]


def test_label_auc_matches_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (300, 3)).astype(np.float32)
    p = np.clip(y * 0.4 + rng.random((300, 3)) * 0.6, 0, 1).astype(np.float32)
    metric = LabelAUC(index=1, num_thresholds=2000)
    metric.update_state(y, p)
    assert float(metric.result()) == pytest.approx(roc_auc_score(y[:, 1], p[:, 1]), abs=2e-3)


def test_phases_follow_the_seed():
    assert [phase.name for phase in plan_phases(False, 2, 5, 1e-3, 1e-4)] == ["train"]
    frozen, finetune = plan_phases(True, 2, 5, 1e-3, 1e-4)
    assert (frozen.backbone_trainable, frozen.epochs, frozen.learning_rate) == (False, 2, 1e-3)
    assert (finetune.backbone_trainable, finetune.epochs, finetune.learning_rate) == (True, 5, 1e-4)


def _tiny_dataset(tmp_path, count=16):
    import cv2

    paths, labels = [], []
    rng = np.random.default_rng(0)
    for index in range(count):
        image = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
        path = tmp_path / f"ID_{index:x}.png"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
        labels.append([index % 2, (index // 2) % 2])
    return paths, np.array(labels, dtype=np.float32)


def test_fit_phases_logs_every_epoch_of_every_phase_to_dvclive(tmp_path, monkeypatch):
    from ich.models import build_single

    monkeypatch.chdir(tmp_path)
    paths, labels = _tiny_dataset(tmp_path)
    data = make_dataset(paths, labels, 32, 8, shuffle=True, seed=0)
    keras.utils.set_random_seed(0)
    model = build_single("efficientnetv2b0", (32, 32, 3), 2, None, 0.0, "tiny")
    phases = plan_phases(True, 1, 1, 1e-3, 1e-4)  # frozen + finetune
    with Live("live", dvcyaml=False, save_dvc_exp=False) as live:
        fit_phases(model, data, data, ["a", "b"], phases, WeightedBinaryCrossentropy([1.0, 1.0]),
                   str(tmp_path / "best.keras"), live, "stage1", patience=3, jit_compile=False)
    loss_rows = (tmp_path / "live/plots/metrics/stage1/train/loss.tsv").read_text().strip().splitlines()
    assert len(loss_rows) == 1 + 2  # header + one row per epoch of both phases
    assert (tmp_path / "live/plots/metrics/stage1/eval/auc_b.tsv").exists()
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary["step"] == 2  # one step per epoch, across both phases
    assert (tmp_path / "best.keras").exists()


def test_same_seed_same_predictions(tmp_path):
    from ich.training import configure_runtime

    paths, labels = _tiny_dataset(tmp_path)
    results = []
    for _ in range(2):
        runtime = configure_runtime(seed=3, deterministic=True, mixed_precision="auto", jit_compile="auto", strategy="auto")
        assert not runtime.mixed_precision and runtime.gpus == 0
        data = make_dataset(paths, labels, 32, 8, shuffle=True, seed=3)
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="sigmoid"),
        ])
        model.compile(optimizer="adam", loss="binary_crossentropy")
        model.fit(data, epochs=1, verbose=0)
        results.append(model.predict(data.map(lambda x, y: x), verbose=0))
    np.testing.assert_array_equal(results[0], results[1])
