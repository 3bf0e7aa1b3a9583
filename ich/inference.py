"""Loading trained models (Keras safe mode) and predicting the six final probabilities."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ich import models as _models  # noqa: F401  (registers AttentionFusion for deserialisation)
from ich import training as _training  # noqa: F401  (registers the loss and metric classes)
from ich.evaluation import combine_cascade
from ich.labels import LABELS

__all__ = ["MODEL_CARD", "LoadedModels", "load_models", "predict_probabilities"]

#: The JSON beside the model files that says how to use them.
MODEL_CARD = "model.json"


@dataclass(frozen=True)
class LoadedModels:
    card: dict
    networks: dict[str, keras.Model]


def load_models(model_dir: str | Path) -> LoadedModels:
    """Read ``model.json`` and its ``.keras`` files with ``safe_mode=True`` (no arbitrary code runs)."""
    model_dir = Path(model_dir)
    card = json.loads((model_dir / MODEL_CARD).read_text())
    networks = {}
    for role, filename in card["files"].items():
        if Path(filename).name != filename or not filename.endswith(".keras"):
            raise ValueError(f"{MODEL_CARD} names an unexpected model file: {filename!r}")
        networks[role] = keras.saving.load_model(model_dir / filename, compile=False, safe_mode=True)
    return LoadedModels(card=card, networks=networks)


def predict_probabilities(
    loaded: LoadedModels, images: tf.data.Dataset, combination: str = "product", gate_threshold: float = 0.5
) -> np.ndarray:
    """``(N, 6)`` probabilities in :data:`LABELS` order for a dataset of ``(image, target)`` batches.

    For the cascades, stage 1 gives P(any) and stage 2 P(subtype | hemorrhage); they are combined by
    :func:`ich.evaluation.combine_cascade`.
    """
    only_images = images.map(lambda image, target: image)
    if "stage1" in loaded.networks:
        p_any = loaded.networks["stage1"].predict(only_images, verbose=0)
        conditional = loaded.networks["stage2"].predict(only_images, verbose=0)
        return combine_cascade(p_any, conditional, combination, gate_threshold)
    probabilities = loaded.networks["model"].predict(only_images, verbose=0).astype(np.float64)
    if probabilities.shape[1] != len(LABELS):
        raise ValueError(f"Expected {len(LABELS)} outputs, got {probabilities.shape[1]}")
    return probabilities
