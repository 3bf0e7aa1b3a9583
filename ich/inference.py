"""Loading a trained model folder (Keras safe mode) and predicting the six final probabilities through its recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ich.model_card import read_model_card
from ich.recipes import Recipe, get_recipe

__all__ = ["LoadedModel", "load_models"]


@dataclass(frozen=True)
class LoadedModel:
    """A model folder in memory: its card, the recipe that predicts with it and its networks by name."""

    card: dict[str, Any]
    recipe: Recipe
    networks: dict[str, keras.Model]

    @property
    def image_size(self) -> int:
        return int(self.card["image_size"])

    def predict(self, images: tf.data.Dataset) -> np.ndarray:
        """``(N, 6)`` float64 probabilities in :data:`ich.labels.LABELS` order, combined as the card says
        (see :meth:`Recipe.predict`)."""
        return self.recipe.predict(
            self.networks, images, self.card.get("combination", "product"), float(self.card.get("gate_threshold", 0.5))
        )


def load_models(model_dir: str | os.PathLike) -> LoadedModel:
    """Read ``model.json`` and its ``.keras`` files with ``safe_mode=True`` (no arbitrary code runs).

    Raises:
        FileNotFoundError / ValueError: no card, or a card naming unexpected files.
        RecipeError: the card's ``arch`` is not a registered recipe.
    """
    model_dir = Path(model_dir)
    card = read_model_card(model_dir)
    recipe = get_recipe(card["arch"])
    if set(card["files"]) != set(recipe.networks):
        raise ValueError(f"{model_dir}: recipe {recipe.name!r} needs networks {recipe.networks}, the card lists {sorted(card['files'])}")
    networks = {
        name: keras.saving.load_model(model_dir / filename, compile=False, safe_mode=True)
        for name, filename in card["files"].items()
    }
    return LoadedModel(card=card, recipe=recipe, networks=networks)
