"""The seed's cascade: stage 1 finds any hemorrhage, stage 2 names its subtypes.

- ``stage1``: EfficientNetV2 -> one sigmoid, P(any), trained on every training image;
- ``stage2``: EfficientNetV2 and ConvNeXt side by side, attention fusion -> five sigmoids,
  P(subtype | hemorrhage), trained on hemorrhage-positive images only;
- final probabilities: ``any = P(any)``, each subtype by :func:`ich.models.combination.combine_cascade`.

``cascade_warmstart`` is the same, with stage 2's EfficientNetV2 starting from stage 1's trained backbone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ich.core.labels import ANY, SUBTYPES
from ich.models.combination import combine_cascade
from ich.models.networks import build_any_classifier, build_subtype_fusion
from ich.models.recipes import RecipeError
from ich.models.recipes.base import CamTarget, Recipe, register

if TYPE_CHECKING:
    from ich.core.params import ModelParams
    from ich.training.trainer import Trainer

__all__ = ["Cascade"]


class Cascade(Recipe):
    """The two-stage cascade (see the module docstring); ``warm_start`` copies stage 1's backbone into stage 2."""

    networks = ("stage1", "stage2")

    def __init__(self, name: str, warm_start: bool):
        self.name = name
        self.warm_start = warm_start

    def build(self, network: str, params: ModelParams, input_shape: tuple[int, int, int]) -> keras.Model:
        if network == "stage1":
            return build_any_classifier(
                params.efficientnet, input_shape, params.weights, params.dropout, params.online_augmentation
            )
        if network == "stage2":
            return build_subtype_fusion(
                params.efficientnet,
                params.convnext,
                input_shape,
                len(SUBTYPES),
                params.weights,
                params.dropout,
                params.fusion_units,
                params.online_augmentation,
            )
        raise RecipeError(f"{self.name} has the networks {', '.join(self.networks)}. Received: {network!r}")

    def fit(self, trainer: Trainer, params: ModelParams) -> dict[str, keras.Model]:
        shape = trainer.input_shape
        stage1 = trainer.fit("stage1", lambda: self.build("stage1", params, shape), [ANY])
        positive_train, positive_val = trainer.train[trainer.train[ANY] == 1], trainer.val[trainer.val[ANY] == 1]
        if positive_train.empty or positive_val.empty:
            raise RecipeError("Stage 2 needs hemorrhage-positive images in train and val; sample more images.")

        def build_stage2() -> keras.Model:
            stage2 = self.build("stage2", params, shape)
            if self.warm_start:
                backbone = params.efficientnet
                stage2.get_layer(backbone).set_weights(stage1.get_layer(backbone).get_weights())
            return stage2

        stage2 = trainer.fit("stage2", build_stage2, SUBTYPES, positive_train, positive_val)
        return {"stage1": stage1, "stage2": stage2}

    def combine(self, outputs: Mapping[str, np.ndarray], combination: str = "product", gate_threshold: float = 0.5) -> np.ndarray:
        return combine_cascade(outputs["stage1"], outputs["stage2"], combination, gate_threshold)

    def cam_target(self, label: str) -> CamTarget:
        """``any``: stage 1's one unit, at its EfficientNetV2. A subtype: its unit of stage 2, at both backbones
        summed: the attention fusion mixes them image by image, so the gradients already carry how much each was
        trusted, and the sum is the whole first-order evidence (either map alone misses the other branch's part)."""
        if label == ANY:
            return CamTarget("stage1", 0, ("efficientnetv2",))
        if label in SUBTYPES:
            return CamTarget("stage2", SUBTYPES.index(label), ("efficientnetv2", "convnext"))
        raise RecipeError(f"`label` must be one of {ANY}, {', '.join(SUBTYPES)}. Received: {label!r}")

    def describe(self, params: ModelParams) -> dict[str, Any]:
        return {"backbones": {"efficientnet": params.efficientnet, "convnext": params.convnext}, "warm_start": self.warm_start}


register(Cascade("cascade", warm_start=False))
register(Cascade("cascade_warmstart", warm_start=True))
