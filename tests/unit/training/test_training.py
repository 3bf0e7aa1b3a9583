import json
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dvclive import Live
from ich.models.losses import LabelAUC, WeightedBinaryCrossentropy, positive_weights
from ich.models.networks import BACKBONES, build_single
from ich.training.datasets import make_dataset
from ich.training.trainer import AtomicModelCheckpoint, fit_phases, plan_phases


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


def _tiny_backbone_model(augment=False, dropout=0.0):
    """A model shaped like ours (online augmentation, a backbone sub-model found by name, dropout, a head),
    small enough to trace fast."""
    from ich.models.networks import _online_augmentation

    layers = keras.layers
    backbone = keras.Sequential(
        [keras.Input((32, 32, 3)), layers.Conv2D(4, 3), layers.BatchNormalization(), layers.GlobalAveragePooling2D()],
        name="efficientnetv2b0",
    )
    image = keras.Input((32, 32, 3))
    features = layers.Dropout(dropout)(backbone(_online_augmentation(image, augment)))
    return keras.Model(image, layers.Dense(2, activation="sigmoid", name="head")(features))


def _fit_tiny(model, data, phases, run="", prefix="stage1", **kwargs):
    """``fit_phases`` on the tiny data set, logging to ``live{run}`` and checkpointing to ``best{run}.keras``."""
    with Live(f"live{run}", dvcyaml=False, save_dvc_exp=False) as live:
        fit_phases(
            model,
            data,
            data,
            ["a", "b"],
            phases,
            WeightedBinaryCrossentropy([1.0, 1.0]),
            f"best{run}.keras",
            live,
            prefix,
            patience=3,
            **{"jit_compile": False, **kwargs},
        )


@pytest.fixture()
def tiny_data(tmp_path, monkeypatch):
    """Images and labels of 16 random 32 px PNGs, with the working directory in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return _tiny_dataset(tmp_path)


def test_fit_phases_logs_every_epoch_of_every_phase_to_dvclive(tmp_path, tiny_data):
    data = make_dataset(*tiny_data, 32, 8, shuffle=True, seed=0)
    keras.utils.set_random_seed(0)
    _fit_tiny(_tiny_backbone_model(), data, plan_phases(True, 1, 1, 1e-3, 1e-4))  # frozen + finetune
    loss_rows = (tmp_path / "live/plots/metrics/stage1/train/loss.tsv").read_text().strip().splitlines()
    assert len(loss_rows) == 1 + 2  # header + one row per epoch of both phases
    assert (tmp_path / "live/plots/metrics/stage1/eval/auc_b.tsv").exists()
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert summary["step"] == 2  # one step per epoch, across both phases
    assert (tmp_path / "best.keras").exists()


def test_a_frozen_phase_trains_the_head_only_and_keeps_batchnorm_statistics(tiny_data):
    from ich.training.trainer import Phase

    data = make_dataset(*tiny_data, 32, 8, shuffle=True, seed=0)
    keras.utils.set_random_seed(0)
    model = _tiny_backbone_model()
    backbone_before = [weight.copy() for weight in model.get_layer("efficientnetv2b0").get_weights()]
    head_before = model.get_layer("head").get_weights()[0].copy()
    _fit_tiny(model, data, [Phase("frozen", 2, 1e-2, False)])
    for after, before in zip(model.get_layer("efficientnetv2b0").get_weights(), backbone_before):
        np.testing.assert_array_equal(after, before)  # kernels and BatchNormalization moving mean/variance
    assert not np.array_equal(model.get_layer("head").get_weights()[0], head_before)


def test_best_checkpoint_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    target = tmp_path / "best.keras"
    checkpoint = AtomicModelCheckpoint(target, monitor="val_auc", mode="max", save_best_only=True, verbose=0)
    checkpoint.set_model(model)
    first = [weight.copy() for weight in model.get_weights()]
    checkpoint.on_epoch_end(0, {"val_auc": 0.6})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.keras"]

    def killed_mid_write(filepath, **kwargs):  # what a kill during Keras's zip write leaves behind
        Path(filepath).write_bytes(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    model.set_weights([weight + 1.0 for weight in first])
    monkeypatch.setattr(model, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.on_epoch_end(1, {"val_auc": 0.7})
    restored = keras.saving.load_model(target, compile=False, safe_mode=True)
    for got, expected in zip(restored.get_weights(), first):
        np.testing.assert_array_equal(got, expected)

    monkeypatch.undo()  # the resumed run (best so far 0.6) saves normally and clears the half-written file
    checkpoint = AtomicModelCheckpoint(
        target, monitor="val_auc", mode="max", save_best_only=True, verbose=0, initial_value_threshold=0.6
    )
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(1, {"val_auc": 0.7})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.keras"]
    restored = keras.saving.load_model(target, compile=False, safe_mode=True)
    np.testing.assert_array_equal(restored.get_weights()[0], first[0] + 1.0)


def test_same_seed_same_predictions(tiny_data):
    """Op determinism on CPU through the pipeline's own training loop: shuffled input, online flips and shifts,
    dropout, BatchNormalization, Adam with a cosine schedule. Same seed: identical predictions; another seed: not."""
    from ich.training.runtime import configure_runtime

    results = []
    for run, seed in enumerate((3, 3, 4)):
        # float32 without XLA on any host (on a GPU host `auto` would turn both on).
        runtime = configure_runtime(seed=seed, deterministic=True, mixed_precision=False, jit_compile=False, strategy="default")
        assert not runtime.mixed_precision and not runtime.jit_compile
        model = _tiny_backbone_model(augment=True, dropout=0.3)
        _fit_tiny(
            model,
            make_dataset(*tiny_data, 32, 8, shuffle=True, seed=seed),
            plan_phases(False, 0, 2, 1e-2, 1e-3),
            run=str(run),
            prefix="model",
            jit_compile=runtime.jit_compile,
            strategy=runtime.strategy,
        )
        results.append(model.predict(make_dataset(*tiny_data, 32, 8, shuffle=False, seed=0).map(lambda x, y: x), verbose=0))
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_runtime_settings_do_not_outlive_a_test_part_one():
    from ich.training.runtime import configure_runtime

    configure_runtime(seed=0, deterministic=True, mixed_precision=True, jit_compile=False, strategy="default")
    assert keras.mixed_precision.global_policy().name == "mixed_float16"


def test_runtime_settings_do_not_outlive_a_test_part_two():
    from tensorflow.python.framework import config  # TF's public API can enable determinism, not query it

    assert keras.mixed_precision.global_policy().name == "float32"
    assert not config.is_op_determinism_enabled()


#: The backbones of the demo (params.yaml) and of params-rsna.yaml.
USED_BACKBONES = ("efficientnetv2b0", "convnext_atto", "convnext_tiny")


@pytest.mark.parametrize(
    "name", [name if name == "convnext_atto" else pytest.param(name, marks=pytest.mark.slow) for name in USED_BACKBONES]
)
def test_local_weights_start_the_backbone_and_the_frozen_phase_keeps_them(tmp_path, tiny_data, name):
    """`model.weights: <folder>` of Keras weights files: the backbone starts from them exactly; the frozen-head
    phase changes the head only (kernels and BatchNormalization statistics of the backbone stay); fine-tuning
    then changes the backbone."""
    folder = tmp_path / "weights"
    folder.mkdir()
    keras.utils.set_random_seed(11)
    written = BACKBONES[name].builder(
        include_top=False, include_preprocessing=True, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    written.save_weights(folder / f"{name}.weights.h5")
    expected = [weight.copy() for weight in written.get_weights()]

    keras.utils.set_random_seed(0)  # another seed: only the file can make the weights equal
    model = build_single(name, (32, 32, 3), 2, str(folder), 0.0, "m")
    backbone = model.get_layer(name)
    started = backbone.get_weights()
    assert len(started) == len(expected)
    for got, want in zip(started, expected):
        np.testing.assert_array_equal(got, want)

    frozen, finetune = plan_phases(True, 1, 1, 1e-2, 1e-3)
    data = make_dataset(*tiny_data, 32, 8, shuffle=True, seed=0)
    head_before = model.get_layer("probabilities").get_weights()[0].copy()
    _fit_tiny(model, data, [frozen], run="frozen")
    for got, want in zip(backbone.get_weights(), expected):
        np.testing.assert_array_equal(got, want)  # incl. BatchNormalization moving mean/variance
    assert not np.array_equal(model.get_layer("probabilities").get_weights()[0], head_before)
    _fit_tiny(model, data, [finetune], run="finetune")
    assert any(not np.array_equal(got, want) for got, want in zip(backbone.get_weights(), expected))
