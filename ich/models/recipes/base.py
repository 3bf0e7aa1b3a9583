"""The :class:`Recipe` interface and the registry that finds one by name."""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import keras
import numpy as np
import tensorflow as tf

from ich.models.networks import HEAD_LAYER
from ich.models.recipes import RecipeError

if TYPE_CHECKING:  # the trainer is handed in by the train stage; inference never imports training code
    from ich.core.params import ModelParams
    from ich.training.trainer import Trainer

__all__ = ["Recipe", "CamTarget", "register", "registered", "registered_names", "images_only"]


@dataclass(frozen=True)
class CamTarget:
    """Where a label's Grad-CAM is computed (see :mod:`ich.inference.explain`).

    Attributes:
        network: the name of the network (of :attr:`Recipe.networks`) whose output scores the label.
        output: the index of the label's unit in that network's head.
        backbones: the families (``efficientnetv2``, ``convnext``) of the nested backbones whose last feature
            maps are weighted; with several, their maps are summed.
    """

    network: str
    output: int
    backbones: tuple[str, ...]


class Recipe(ABC):
    """An architecture: how to build and train its networks and how to predict with them.

    Attributes:
        name: the ``model.arch`` value that selects it.
        networks: the names of its trained networks, in training order; each is saved as
            ``models/<name>.keras`` and found again by name when predicting.
    """

    name: str
    networks: ClassVar[tuple[str, ...]]

    @abstractmethod
    def build(self, network: str, params: ModelParams, input_shape: tuple[int, int, int]) -> keras.Model:
        """One untrained network of :attr:`networks`, images of ``input_shape`` in ``[0, 1]`` in."""

    @abstractmethod
    def fit(self, trainer: Trainer, params: ModelParams) -> dict[str, keras.Model]:
        """Build and train every network through ``trainer``; returns ``{network name: trained model}``."""

    @abstractmethod
    def combine(self, outputs: Mapping[str, np.ndarray], combination: str = "product", gate_threshold: float = 0.5) -> np.ndarray:
        """``(N, 6)`` float64 probabilities in :data:`ich.core.labels.LABELS` order from each network's raw output
        (``{network name: (N, outputs)}``). ``combination``/``gate_threshold`` matter to the cascades only."""

    def predict(
        self,
        networks: Mapping[str, keras.Model],
        images: tf.data.Dataset,
        combination: str = "product",
        gate_threshold: float = 0.5,
    ) -> np.ndarray:
        """``(N, 6)`` float64 probabilities in :data:`ich.core.labels.LABELS` order for a dataset of image batches
        (or of ``(image, target)`` batches): every network in turn, then :meth:`combine`."""
        only_images = images_only(images)
        outputs = {name: np.asarray(networks[name].predict(only_images, verbose=0)) for name in self.networks}
        return self.combine(outputs, combination, gate_threshold)

    def predict_with_features(
        self,
        networks: Mapping[str, keras.Model],
        images: tf.data.Dataset,
        combination: str = "product",
        gate_threshold: float = 0.5,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict`'s probabilities and, per image, the pooled features each network's head reads (the
        input of its layer named :data:`HEAD_LAYER`), concatenated over :attr:`networks` in order: what the
        sequence model sees of a slice."""
        only_images = images_only(images)
        outputs, features = {}, []
        for name in self.networks:
            network = networks[name]
            extractor = _feature_extractor(network)
            pooled, outputs[name] = extractor.predict(only_images, verbose=0)
            features.append(np.asarray(pooled, dtype=np.float32))
        return self.combine(outputs, combination, gate_threshold), np.concatenate(features, axis=1)

    def cam_target(self, label: str) -> CamTarget:
        """Which network, head unit and backbone(s) explain ``label`` (one of :data:`ich.core.labels.LABELS`).

        Raises:
            RecipeError: the label is unknown, or the recipe does not say (a new recipe overrides this).
        """
        raise RecipeError(f"Recipe {self.name!r} does not say where its Grad-CAM is computed: implement `cam_target`.")

    @abstractmethod
    def describe(self, params: ModelParams) -> dict[str, Any]:
        """What ``model.json`` records about this architecture besides the common fields (its backbones)."""


_EXTRACTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _feature_extractor(network: keras.Model) -> keras.Model:
    """``network`` with two outputs, its head's input (the pooled features) and its own output; built once per
    network, so repeated predictions reuse one traced function."""
    if network not in _EXTRACTORS:
        _EXTRACTORS[network] = keras.Model(network.inputs, [network.get_layer(HEAD_LAYER).input, network.outputs[0]])
    return _EXTRACTORS[network]


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the registry under ``recipe.name`` (a name can be registered once)."""
    if recipe.name in _REGISTRY:
        raise ValueError(f"A recipe named {recipe.name!r} is already registered")
    _REGISTRY[recipe.name] = recipe
    return recipe


def registered_names() -> list[str]:
    """Every registered ``model.arch``, in registration order (see :func:`ich.models.recipes.recipe_names`)."""
    return list(_REGISTRY)


def registered(name: str) -> Recipe | None:
    """The recipe registered as ``name``, or None (:func:`ich.models.recipes.get_recipe` says what is known)."""
    return _REGISTRY.get(name)


def images_only(images: tf.data.Dataset) -> tf.data.Dataset:
    """A dataset of image batches, whether ``images`` yields images or ``(image, target)`` pairs."""
    if isinstance(images.element_spec, tuple):
        return images.map(lambda image, *rest: image)
    return images
