"""Loading a trained model folder (Keras safe mode) and predicting through its recipe, and its sequence model
when the folder has one.

A model folder (``models/``) holds ``model.json``; the CNN's networks are beside it or in the subfolder its
``cnn_dir`` names, and a sequence model, when trained, in the subfolder its ``sequence.dir`` names, as are the
out-of-distribution statistics its ``ood`` names (:mod:`ich.inference.ood`). A CNN folder alone (``models/cnn``)
loads too: it predicts without slice context and without the out-of-distribution check.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ich.data.context import compose_context, neighbour_indices, series_order, series_runs
from ich.inference.ood import OodStats, load_ood, ood_entry
from ich.models.card import ModelCard, read_model_card
from ich.models.recipes import Recipe, get_recipe
from ich.models.sequence import predict_series, slice_inputs

__all__ = ["LoadedModel", "SlicePredictions", "load_models", "image_batches"]


@dataclass(frozen=True)
class SlicePredictions:
    """Per-slice ``(N, 6)`` float64 probabilities in :data:`ich.core.labels.LABELS` order, rows in input order.

    Attributes:
        cnn: the recipe's own (cascade-combined) probabilities; final: the sequence model's when the model folder
        has one, else ``cnn``; features: the ``(N, F)`` pooled CNN features (what the sequence model reads and the
        out-of-distribution check scores; ``None`` when the folder has neither).
    """

    cnn: np.ndarray
    final: np.ndarray
    features: np.ndarray | None = None


def image_batches(images: np.ndarray, batch_size: int = 64) -> tf.data.Dataset:
    """Rendered images (uint8 0..255, or float in [0, 1]) as float32 ``[0, 1]`` batches, in order."""
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    dataset = tf.data.Dataset.from_tensor_slices(images)
    return dataset.batch(batch_size).map(lambda batch: tf.cast(batch, tf.float32) / scale)


@dataclass(frozen=True)
class LoadedModel:
    """A model folder in memory: its card, the recipe that predicts with it, its networks by name, its sequence
    model and its out-of-distribution statistics (each ``None`` when the folder has none)."""

    card: ModelCard
    recipe: Recipe
    networks: dict[str, keras.Model]
    sequence: keras.Model | None = None
    ood: OodStats | None = None

    @property
    def image_size(self) -> int:
        return self.card.image_size

    @property
    def context_slices(self) -> int:
        """``model.context_slices`` of training: 0 = single slices, k = 2.5D from the slices k before and after."""
        return self.card.context_slices

    def predict(self, images: tf.data.Dataset) -> np.ndarray:
        """``(N, 6)`` float64 CNN probabilities of images exactly as given (already composed when the model is
        2.5D), combined as the card says (see :meth:`Recipe.predict`). No slice context: see :meth:`predict_slices`."""
        return self.recipe.predict(self.networks, images, self.card.combination, self.card.gate_threshold)

    def model_inputs(
        self,
        images: np.ndarray,
        series: Sequence[str] | np.ndarray,
        positions: Sequence[float] | np.ndarray,
        ids: Sequence[str] | np.ndarray | None = None,
    ) -> np.ndarray:
        """What the CNN reads: the rendered single slices ``(N, H, W, 3)`` composed into 2.5D images as in training
        (:func:`ich.data.context.compose_context`; unchanged when ``context_slices`` is 0)."""
        if self.context_slices == 0:
            return np.asarray(images)
        before, after = neighbour_indices(series, positions, self.context_slices, ids)
        return compose_context(images, before, after)

    def predict_slices(
        self,
        images: np.ndarray,
        series: Sequence[str] | np.ndarray,
        positions: Sequence[float] | np.ndarray,
        ids: Sequence[str] | np.ndarray | None = None,
        batch_size: int = 64,
        tta: bool = False,
    ) -> SlicePredictions:
        """Predict whole series: ``images`` are rendered single slices ``(N, H, W, 3)`` (uint8 as the PNGs, or
        float in [0, 1]) at :attr:`image_size`, ``series``/``positions`` their series keys and z positions. Every
        slice of each series must be here (neighbours and the sequence model read the whole series); rows may come
        in any order and the output keeps it.

        ``tta``: average the CNN's probabilities and features over the image and its horizontal mirror.
        """
        needs_features = self.sequence is not None or self.ood is not None
        cnn, features = self.cnn_outputs(images, series, positions, ids, batch_size, tta, with_features=needs_features)
        if self.sequence is None:
            return SlicePredictions(cnn=cnn, final=cnn, features=features)
        assert features is not None  # computed: with_features was True
        runs = series_runs(series, series_order(series, positions, ids))
        final = predict_series(self.sequence, slice_inputs(features, cnn), runs)
        return SlicePredictions(cnn=cnn, final=final, features=features)

    def cnn_outputs(
        self,
        images: np.ndarray,
        series: Sequence[str] | np.ndarray,
        positions: Sequence[float] | np.ndarray,
        ids: Sequence[str] | np.ndarray | None = None,
        batch_size: int = 64,
        tta: bool = False,
        with_features: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The CNN alone on whole series (arguments as :meth:`predict_slices`): its ``(N, 6)`` probabilities and,
        with ``with_features``, the ``(N, F)`` pooled features the sequence model reads (else ``None``)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must be (N, {self.image_size}, {self.image_size}, 3). Received shape {images.shape}")
        inputs = self.model_inputs(images, series, positions, ids)
        combination, gate = self.card.combination, self.card.gate_threshold
        views = [inputs, inputs[:, :, ::-1]] if tta else [inputs]
        if not with_features:
            return np.mean(
                [self.recipe.predict(self.networks, image_batches(view, batch_size), combination, gate) for view in views], axis=0
            ), None
        outputs = [
            self.recipe.predict_with_features(self.networks, image_batches(view, batch_size), combination, gate) for view in views
        ]
        return np.mean([p for p, _ in outputs], axis=0), np.mean([f for _, f in outputs], axis=0)


def load_models(model_dir: str | os.PathLike) -> LoadedModel:
    """Read ``model.json`` and its ``.keras`` files with ``safe_mode=True`` (no arbitrary code runs).

    Raises:
        FileNotFoundError / ValueError: no card, or a card naming unexpected files or folders.
        RecipeError: the card's ``arch`` is not a registered recipe.
    """
    model_dir = Path(model_dir)
    card = read_model_card(model_dir)
    recipe = get_recipe(card.arch)
    if set(card.files) != set(recipe.networks):
        raise ValueError(
            f"{model_dir}: recipe {recipe.name!r} needs networks {recipe.networks}, the card lists {sorted(card.files)}"
        )
    # The card's schema allows plain names only (ich.models.card), so every path below stays inside model_dir.
    cnn_dir = model_dir / card.cnn_dir if card.cnn_dir else model_dir
    sequence_path = model_dir / card.sequence.dir / card.sequence.file if card.sequence else None
    networks = {
        name: keras.saving.load_model(cnn_dir / filename, compile=False, safe_mode=True) for name, filename in card.files.items()
    }
    sequence = keras.saving.load_model(sequence_path, compile=False, safe_mode=True) if sequence_path else None
    entry = ood_entry(card)  # checked before anything is loaded
    ood = load_ood(model_dir / entry.dir / entry.file) if entry else None
    return LoadedModel(card=card, recipe=recipe, networks=networks, sequence=sequence, ood=ood)
