"""The sequence model: slice context over each series, on top of a frozen CNN.

As the 1st and 2nd place RSNA 2019 solutions did: the trained CNN gives every slice its pooled features
and its six probabilities; a bidirectional GRU reads each series in z order and gives every slice six
refined probabilities. Here (sized for few training series):

- per slice: the pooled features -> Dropout -> Dense(``projection``, relu); concatenated with the CNN's six
  logits and their differences to the previous and next slice (2nd place's ``[e, e - e_prev, e - e_next]``,
  on the logits; zero at series edges);
- two stacked bidirectional GRUs (``units`` each way) over the padded, masked series;
- a per-slice Dense(6) *correction* added to the CNN's own logits, then a sigmoid: the correction starts at
  zero, so an untrained sequence model predicts exactly what the CNN did, and training moves it only where
  context helps (1st place's skip connection, in logit space).

Padding never reaches a real slice: the GRUs skip masked steps in both directions, and the neighbour
differences are computed per series before padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from ich.core.labels import LABELS, LOG_LOSS_WEIGHTS

__all__ = [
    "LOGIT_CLIP",
    "Columns",
    "BooleanMask",
    "slice_inputs",
    "series_inputs",
    "build_sequence_model",
    "pad_series",
    "predict_series",
    "SeriesBatches",
    "label_weights",
    "SeriesSet",
    "weighted_binary_crossentropy",
    "fit_sequence",
]

#: Probabilities are clipped to [1e-6, 1 - 1e-6] before taking logits (finite inputs for certain slices).
LOGIT_CLIP = 1e-6
_NUM_LABELS = len(LABELS)


def _logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(p / (1.0 - p))


def slice_inputs(features: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """One row per slice: ``[pooled features, the CNN's six logits]``, float32 (neighbour differences are
    added per series by :func:`series_inputs`)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(probabilities):
        raise ValueError(
            f"features must be (N, F) with one row per probability row; got {features.shape} and {np.shape(probabilities)}"
        )
    return np.concatenate([features, _logit(probabilities).astype(np.float32)], axis=1)


def series_inputs(rows: np.ndarray) -> np.ndarray:
    """One series (rows of :func:`slice_inputs` in z order) -> ``[features, logits, logits - previous slice's,
    logits - next slice's]`` (zero differences at the edges)."""
    rows = np.asarray(rows, dtype=np.float32)
    logits = rows[:, -_NUM_LABELS:]
    previous = np.concatenate([logits[:1], logits[:-1]], axis=0)
    following = np.concatenate([logits[1:], logits[-1:]], axis=0)
    return np.concatenate([rows, logits - previous, logits - following], axis=1)


@keras.saving.register_keras_serializable(package="ich")
class Columns(layers.Layer):
    """The last axis' columns ``start:stop`` (a named, serialisable slice; no Lambda, so safe-mode loading works)."""

    def __init__(self, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package="ich")
class BooleanMask(layers.Layer):
    """A float 0/1 mask as the boolean mask recurrent layers take."""

    def call(self, mask):
        return keras.ops.greater(mask, 0.5)

    def compute_output_spec(self, mask):
        return keras.KerasTensor(mask.shape, dtype="bool")


def build_sequence_model(
    feature_dim: int, projection: int = 32, units: int = 32, dropout: float = 0.5, layers_count: int = 2
) -> keras.Model:
    """The sequence network: inputs ``slices`` ``(batch, T, feature_dim + 18)`` (from :func:`series_inputs`)
    and ``mask`` ``(batch, T)`` (1 = a real slice), output ``(batch, T, 6)`` probabilities (see the module
    docstring). ``feature_dim`` is the CNN's pooled-feature width."""
    width = feature_dim + 3 * _NUM_LABELS
    slices = keras.Input((None, width), name="slices")
    mask = keras.Input((None,), name="mask")
    features = Columns(0, feature_dim, name="features")(slices)
    logits = Columns(feature_dim, feature_dim + _NUM_LABELS, name="cnn_logits")(slices)
    context = Columns(feature_dim, width, name="logits_and_differences")(slices)
    projected = layers.Dropout(dropout, name="feature_dropout")(features)
    projected = layers.Dense(projection, activation="relu", name="projection")(projected)
    x = layers.Concatenate(name="slice_inputs")([projected, context])
    boolean_mask = BooleanMask(name="boolean_mask")(mask)
    for index in range(layers_count):
        x = layers.Bidirectional(layers.GRU(units, return_sequences=True), name=f"bigru_{index}")(x, mask=boolean_mask)
        x = layers.Dropout(dropout, name=f"dropout_{index}")(x)
    correction = layers.Dense(_NUM_LABELS, kernel_initializer="zeros", bias_initializer="zeros", name="correction")(x)
    refined = layers.Add(name="refined_logits")([logits, correction])
    outputs = layers.Activation("sigmoid", dtype="float32", name="probabilities")(refined)
    return keras.Model({"slices": slices, "mask": mask}, outputs, name="sequence")


def pad_series(series: Sequence[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack series of different lengths, zero-padded at the end: ``(batch, T, width)`` and the ``(batch, T)``
    float32 mask (1 = real slice)."""
    if not series:
        raise ValueError("No series to pad")
    length = length or max(len(rows) for rows in series)
    width = series[0].shape[1]
    padded = np.zeros((len(series), length, width), dtype=np.float32)
    mask = np.zeros((len(series), length), dtype=np.float32)
    for index, rows in enumerate(series):
        padded[index, : len(rows)] = rows
        mask[index, : len(rows)] = 1.0
    return padded, mask


def predict_series(model: keras.Model, rows: np.ndarray, runs: Sequence[np.ndarray], batch_series: int = 16) -> np.ndarray:
    """Refined ``(N, 6)`` float64 probabilities for rows of :func:`slice_inputs`, ``runs`` being each series'
    row indices in z order (:func:`ich.data.context.series_runs`). Series of similar length are batched together."""
    output = np.full((len(rows), _NUM_LABELS), np.nan)
    by_length = sorted(range(len(runs)), key=lambda index: len(runs[index]))
    for start in range(0, len(by_length), batch_series):
        chosen = [runs[index] for index in by_length[start : start + batch_series]]
        padded, mask = pad_series([series_inputs(rows[run]) for run in chosen])
        predicted = model.predict_on_batch({"slices": padded, "mask": mask})
        for place, run in enumerate(chosen):
            output[run] = np.asarray(predicted[place, : len(run)], dtype=np.float64)
    if np.isnan(output).any():
        raise ValueError("Some rows belong to no series run")
    return output


def label_weights() -> np.ndarray:
    """The competition's per-label weights (``any`` 2, each subtype 1) in :data:`LABELS` order, scaled to sum 1."""
    weights = np.array([LOG_LOSS_WEIGHTS[label] for label in LABELS], dtype=np.float32)
    return weights / weights.sum()


@dataclass
class SeriesBatches:
    """Training batches of whole series (or random crops of them), some reversed, reshuffled every epoch.

    Attributes:
        inputs: per series, its :func:`series_inputs` rows in z order; targets: its ``(T, 6)`` 0/1 labels.
        batch_series: series per batch; crop: longest crop (``0`` = whole series); reverse_p: chance a series
        is read backwards; seed: the random stream (the same batches every run).
    """

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    batch_series: int
    crop: int
    reverse_p: float
    seed: int

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.batch_series)

    def epoch(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """One pass: ``({"slices", "mask"}, targets, per-slice weights)`` batches; pads weigh zero."""
        order = self._rng.permutation(len(self.inputs))
        for start in range(0, len(order), self.batch_series):
            rows, targets = [], []
            for index in order[start : start + self.batch_series]:
                x, y = self.inputs[index], self.targets[index]
                if self.crop and len(x) > self.crop:
                    begin = int(self._rng.integers(0, len(x) - self.crop + 1))
                    x, y = x[begin : begin + self.crop], y[begin : begin + self.crop]
                if self._rng.random() < self.reverse_p:
                    # Read backwards: the previous/next differences swap places.
                    x = x[::-1].copy()
                    half = x.shape[1] - 2 * _NUM_LABELS
                    x[:, half:] = np.concatenate([x[:, half + _NUM_LABELS :], x[:, half : half + _NUM_LABELS]], axis=1)
                    y = y[::-1]
                rows.append(x)
                targets.append(np.asarray(y, dtype=np.float32))
            padded, mask = pad_series(rows)
            padded_targets, _ = pad_series(targets, padded.shape[1])
            yield {"slices": padded, "mask": mask}, padded_targets, mask


@dataclass(frozen=True)
class SeriesSet:
    """One split for the sequence model: :func:`slice_inputs` rows, their ``(N, 6)`` 0/1 targets, and each
    series' row indices in z order (:func:`ich.data.context.series_runs`)."""

    rows: np.ndarray
    targets: np.ndarray
    runs: list[np.ndarray]

    @property
    def feature_dim(self) -> int:
        return int(self.rows.shape[1]) - _NUM_LABELS


@keras.saving.register_keras_serializable(package="ich")
def weighted_binary_crossentropy(y_true, y_pred):
    """Per-slice binary cross-entropy averaged over the six labels with the competition's weights (``any`` twice)."""
    weights = keras.ops.convert_to_tensor(label_weights())
    y_pred = keras.ops.clip(y_pred, 1e-7, 1.0 - 1e-7)
    losses = -(y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred))
    return keras.ops.sum(losses * weights, axis=-1)


def fit_sequence(train: SeriesSet, val: SeriesSet, params, score, live=None) -> tuple[keras.Model, dict]:
    """Train the sequence network on ``train`` with early stopping on ``val``.

    Args:
        params: the ``sequence`` params (:class:`ich.core.params.SequenceParams`).
        score: ``score(y_true, y_prob) -> float``, lower is better (the weighted log loss), computed on ``val``
            after every epoch; the weights of the best epoch are kept.
        live: a dvclive ``Live`` to log ``train_loss`` and ``val_weighted_log_loss`` per epoch (optional).

    Returns:
        The network with its best weights, and a summary (best epoch, its validation score, epochs run).
    """
    keras.utils.set_random_seed(params.seed)
    model = build_sequence_model(train.feature_dim, params.projection, params.units, params.dropout, params.layers)
    model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss=weighted_binary_crossentropy)
    batches = SeriesBatches(
        [series_inputs(train.rows[run]) for run in train.runs],
        [train.targets[run] for run in train.runs],
        params.batch_series,
        params.crop,
        params.reverse_p,
        params.seed,
    )
    best = {"epoch": 0, "val_weighted_log_loss": float(score(val.targets, predict_series(model, val.rows, val.runs)))}
    best_weights, epochs_run = model.get_weights(), 0
    for epoch in range(1, params.epochs + 1):
        losses = [float(model.train_on_batch(x, y, sample_weight=w)) for x, y, w in batches.epoch()]
        val_score = float(score(val.targets, predict_series(model, val.rows, val.runs)))
        epochs_run = epoch
        if live is not None:
            live.log_metric("train_loss", float(np.mean(losses)))
            live.log_metric("val_weighted_log_loss", val_score)
            live.next_step()
        if val_score < best["val_weighted_log_loss"]:
            best, best_weights = {"epoch": epoch, "val_weighted_log_loss": val_score}, model.get_weights()
        elif epoch - best["epoch"] >= params.early_stopping_patience:
            break
    model.set_weights(best_weights)
    return model, {**best, "epochs_run": epochs_run}
