"""The recipe registry: every registered recipe builds its networks and predicts six probabilities; a model
folder round-trips through the card; a new recipe is one class and one registration."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ich.core.labels import LABELS
from ich.core.params import ModelParams, section
from ich.inference.loading import load_models
from ich.models.card import model_card, save_model_folder
from ich.models.recipes import Recipe, RecipeError, get_recipe, recipe_names, register
from ich.models.recipes import base as registry

SHAPE = (32, 32, 3)
MODEL = {
    "arch": "cascade",
    "efficientnet": "efficientnetv2b0",
    "convnext": "convnext_atto",
    "weights": None,
    "dropout": 0.1,
    "fusion_units": 16,
    "online_augmentation": True,
    "combination": "product",
    "gate_threshold": 0.5,
    "context_slices": 0,
}


def _params(arch: str) -> ModelParams:
    return section({"model": {**MODEL, "arch": arch}}, "model", ModelParams)


def _images(count=5, seed=0):
    return np.random.default_rng(seed).random((count, *SHAPE), dtype=np.float32)


def test_the_four_architectures_are_registered_and_an_unknown_name_lists_them():
    assert recipe_names()[:4] == ["cascade", "cascade_warmstart", "efficientnetv2", "convnext"]
    with pytest.raises(RecipeError, match="must be one of cascade, cascade_warmstart, efficientnetv2, convnext.*'nonsense'"):
        get_recipe("nonsense")
    assert _params("nonsense").arch == "nonsense"  # params.yaml's schema is types only: the registry decides


@pytest.mark.parametrize("arch", ["cascade", "cascade_warmstart", "efficientnetv2", "convnext"])
def test_every_recipe_builds_its_networks_and_predicts_six_probabilities(arch):
    recipe, params = get_recipe(arch), _params(arch)
    keras.utils.set_random_seed(0)
    networks = {name: recipe.build(name, params, SHAPE) for name in recipe.networks}
    images = _images()
    batches = tf.data.Dataset.from_tensor_slices((images, np.zeros((5, 6), np.float32))).batch(2)
    probabilities = recipe.predict(networks, batches)
    assert probabilities.shape == (5, len(LABELS)) and probabilities.dtype == np.float64
    assert np.isfinite(probabilities).all() and (probabilities >= 0).all() and (probabilities <= 1).all()
    if recipe.networks == ("stage1", "stage2"):
        # P(any) from stage 1; P(subtype) = P(any) * P(subtype | bleed) from stage 2 (the product combination).
        p_any = np.asarray(networks["stage1"](images, training=False), np.float64)
        conditional = np.asarray(networks["stage2"](images, training=False), np.float64)
        np.testing.assert_allclose(probabilities[:, :1], p_any, rtol=1e-5)
        np.testing.assert_allclose(probabilities[:, 1:], p_any * conditional, rtol=1e-5)
    else:
        np.testing.assert_allclose(probabilities, np.asarray(networks["model"](images, training=False)), rtol=1e-5)
    with pytest.raises(RecipeError, match="Received: 'other'"):
        recipe.build("other", params, SHAPE)


def test_a_model_folder_round_trips_through_its_card(tmp_path):
    recipe, params = get_recipe("convnext"), _params("convnext")
    keras.utils.set_random_seed(1)
    networks = {name: recipe.build(name, params, SHAPE) for name in recipe.networks}
    checkpoints = {}
    for name, network in networks.items():
        checkpoints[name] = tmp_path / f"{name}.best.keras"
        network.save(checkpoints[name])
    card = model_card(
        arch="convnext",
        described=recipe.describe(params),
        networks={name: f"{name}.keras" for name in networks},
        image_size=SHAPE[0],
        windows=[],
        weights=None,
        thresholds={label: 0.5 for label in LABELS},
        combination="gate",
        gate_threshold=0.3,
    )
    save_model_folder(tmp_path / "models", card, checkpoints)
    loaded = load_models(tmp_path / "models")
    assert loaded.recipe is recipe and loaded.image_size == SHAPE[0]
    images = tf.data.Dataset.from_tensor_slices(_images(4, seed=2)).batch(4)
    np.testing.assert_allclose(loaded.predict(images), recipe.predict(networks, images), rtol=1e-6)


def test_a_card_naming_a_file_outside_its_folder_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "model.json").write_text('{"arch": "efficientnetv2", "files": {"model": "../model.keras"}}')
    with pytest.raises(
        ValueError,
        match=r"files: Value error, must be a plain .keras file name inside the model folder. Received: .../model.keras.",
    ):
        load_models(folder)


def test_inference_loads_without_the_training_code():
    code = "import sys, ich.inference.loading; print(sorted(m for m in sys.modules if m in ('ich.training.trainer', 'ich.training.resume', 'ich.models.losses')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_new_recipe_is_one_class_and_one_registration():
    class Constant(Recipe):
        """Predicts the prevalence of each label, whatever the image: a baseline."""

        name = "constant"
        networks = ()

        def build(self, network, params, input_shape):
            raise RecipeError("no networks")

        def fit(self, trainer, params):
            return {}

        def combine(self, outputs, combination="product", gate_threshold=0.5):
            raise AssertionError("predict is overridden")

        def predict(self, networks, images, combination="product", gate_threshold=0.5):
            count = sum(int(batch.shape[0]) for batch in registry.images_only(images))
            return np.tile([0.14, 0.004, 0.048, 0.035, 0.048, 0.063], (count, 1))

        def describe(self, params):
            return {}

    register(Constant())
    try:
        assert _params("constant").arch == "constant"
        images = tf.data.Dataset.from_tensor_slices(_images(3)).batch(2)
        assert get_recipe("constant").predict({}, images).shape == (3, 6)
        with pytest.raises(ValueError, match="already registered"):
            register(Constant())
    finally:
        registry._REGISTRY.pop("constant")


class _BuildOnly:
    """A stand-in for the train stage's Trainer: builds each network and records it, without training."""

    def __init__(self, train, val):
        self.train, self.val, self.input_shape, self.built = train, val, SHAPE, {}

    def fit(self, name, build, labels, train=None, val=None):
        self.built[name] = (build(), list(labels), len(self.train if train is None else train))
        return self.built[name][0]


@pytest.mark.parametrize("arch,copied", [("cascade", False), ("cascade_warmstart", True)])
def test_the_cascades_train_stage_two_on_positives_and_only_the_warm_start_copies_stage_one(arch, copied):
    import pandas as pd

    frame = pd.DataFrame({"ID": [f"ID_0{n}" for n in range(6)], **{label: [1, 0, 1, 0, 0, 1] for label in LABELS}})
    trainer = _BuildOnly(frame, frame.iloc[:3])
    keras.utils.set_random_seed(5)
    networks = get_recipe(arch).fit(trainer, _params(arch))
    assert trainer.built["stage1"][1:] == (["any"], 6)
    assert trainer.built["stage2"][1:] == (["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"], 3)
    first = networks["stage1"].get_layer("efficientnetv2b0").get_weights()
    second = networks["stage2"].get_layer("efficientnetv2b0").get_weights()
    same = all(np.array_equal(a, b) for a, b in zip(first, second))
    assert same is copied
