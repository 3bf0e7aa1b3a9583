"""Single-backbone models: one EfficientNetV2 or one ConvNeXt with six sigmoids, trained on every image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ich.core.labels import LABELS
from ich.models.networks import build_single
from ich.models.recipes import RecipeError
from ich.models.recipes.base import CamTarget, Recipe, register

if TYPE_CHECKING:
    from ich.core.params import ModelParams
    from ich.training.trainer import Trainer

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

    def combine(self, outputs: Mapping[str, np.ndarray], combination: str = "product", gate_threshold: float = 0.5) -> np.ndarray:
        probabilities = np.asarray(outputs["model"], dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[1] != len(LABELS):
            raise ValueError(f"Expected {len(LABELS)} outputs, got shape {probabilities.shape}")
        return probabilities

    def cam_target(self, label: str) -> CamTarget:
        """Every label: its unit of the one network, at its one backbone."""
        if label not in LABELS:
            raise RecipeError(f"`label` must be one of {', '.join(LABELS)}. Received: {label!r}")
        return CamTarget("model", LABELS.index(label), (self.family,))

    def describe(self, params: ModelParams) -> dict[str, Any]:
        return {"backbones": {self.family: self.backbone(params)}}


register(SingleBackbone("efficientnetv2"))
register(SingleBackbone("convnext"))
