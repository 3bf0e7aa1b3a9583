"""Single-backbone models: one EfficientNetV2 or one ConvNeXt with six sigmoids, trained on every image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from ich.labels import LABELS
from ich.models import build_single
from ich.recipes.base import Recipe, RecipeError, images_only, register

if TYPE_CHECKING:
    from ich.params import ModelParams
    from ich.training import Trainer

__all__ = ["SingleBackbone"]


class SingleBackbone(Recipe):
    """One backbone of ``family`` (``efficientnetv2`` uses ``model.efficientnet``, ``convnext`` ``model.convnext``)."""

    networks = ("model",)

    def __init__(self, family: str):
        self.name = family
        self.family = family

    def backbone(self, params: ModelParams) -> str:
        return params.efficientnet if self.family == "efficientnetv2" else params.convnext

    def build(self, network: str, params: ModelParams, input_shape: tuple[int, int, int]) -> keras.Model:
        if network != "model":
            raise RecipeError(f"{self.name} has one network, 'model'. Received: {network!r}")
        return build_single(
            self.backbone(params), input_shape, len(LABELS), params.weights, params.dropout, self.name, params.online_augmentation
        )

    def fit(self, trainer: Trainer, params: ModelParams) -> dict[str, keras.Model]:
        return {"model": trainer.fit("model", lambda: self.build("model", params, trainer.input_shape), LABELS)}

    def predict(
        self,
        networks: Mapping[str, keras.Model],
        images: tf.data.Dataset,
        combination: str = "product",
        gate_threshold: float = 0.5,
    ) -> np.ndarray:
        probabilities = networks["model"].predict(images_only(images), verbose=0).astype(np.float64)
        if probabilities.shape[1] != len(LABELS):
            raise ValueError(f"Expected {len(LABELS)} outputs, got {probabilities.shape[1]}")
        return probabilities

    def describe(self, params: ModelParams) -> dict[str, Any]:
        return {"backbones": {self.family: self.backbone(params)}}


register(SingleBackbone("efficientnetv2"))
register(SingleBackbone("convnext"))
