"""The training loss and metrics: class-weighted binary cross-entropy, per-label AUC, positive weights."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

__all__ = ["WeightedBinaryCrossentropy", "LabelAUC", "positive_weights", "auc_metrics"]


@keras.saving.register_keras_serializable(package="ich")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with a weight on each label's positive term (class imbalance).

    ``loss = -mean_labels(w_l * y * log p + (1 - y) * log(1 - p))``; ``w_l = 1`` is plain BCE.
    """

    def __init__(self, positive_weights: Sequence[float], name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(weight) for weight in positive_weights]

    def call(self, y_true, y_pred):
        y_pred = keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        y_true = keras.ops.cast(y_true, "float32")
        weights = keras.ops.convert_to_tensor(self.positive_weights, dtype="float32")
        terms = weights * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred)
        return -keras.ops.mean(terms, axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_weights": self.positive_weights}


@keras.saving.register_keras_serializable(package="ich")
class LabelAUC(keras.metrics.AUC):
    """ROC AUC of one output column, so every label's AUC is logged each epoch."""

    def __init__(self, index: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, self.index], y_pred[:, self.index], sample_weight)

    def get_config(self):
        return {**super().get_config(), "index": self.index}


def positive_weights(targets: np.ndarray, maximum: float) -> list[float]:
    """Per-label ``negatives / positives``, clipped to ``[1, maximum]`` (1 where a label has no positive)."""
    positives = targets.sum(axis=0)
    negatives = len(targets) - positives
    ratio = np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0)
    return np.clip(ratio, 1.0, maximum).round(4).tolist()


def auc_metrics(label_names: Sequence[str]) -> list[keras.metrics.Metric]:
    """Overall AUC, and with several labels one :class:`LabelAUC` per label (``auc_<label>``)."""
    metrics: list[keras.metrics.Metric] = [
        keras.metrics.AUC(
            multi_label=len(label_names) > 1, num_labels=len(label_names) if len(label_names) > 1 else None, name="auc"
        )
    ]
    if len(label_names) > 1:
        metrics += [LabelAUC(index, name=f"auc_{label}") for index, label in enumerate(label_names)]
    return metrics
