"""Training: runtime setup (seeds, precision, XLA, tf.distribute), weighted loss, per-label AUC, phases."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from dvclive.keras import DVCLiveCallback
from dvclive.utils import standardize_metric_name

from ich.models import backbones_of
from ich.resume import ResumableEarlyStopping, ResumeCallback, ResumeStore

__all__ = [
    "Runtime",
    "configure_runtime",
    "WeightedBinaryCrossentropy",
    "LabelAUC",
    "positive_weights",
    "StageLiveCallback",
    "Phase",
    "plan_phases",
    "fit_phases",
    "AtomicModelCheckpoint",
]

logger = logging.getLogger("ich")


@dataclass(frozen=True)
class Runtime:
    """What :func:`configure_runtime` decided: the strategy and the effective switches."""

    strategy: tf.distribute.Strategy
    mixed_precision: bool
    jit_compile: bool
    gpus: int
    is_chief: bool = True  # False on the non-chief workers of a multi-worker run (they write no outputs)


def _switch(value: str | bool, default: bool, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value == "auto":
        return default
    raise ValueError(f"`{name}` must be true, false or auto. Received: {value!r}")


def configure_runtime(
    seed: int,
    deterministic: bool,
    mixed_precision: str | bool,
    jit_compile: str | bool,
    strategy: str,
) -> Runtime:
    """Seed everything once, choose precision, XLA and the tf.distribute strategy.

    ``auto`` turns mixed precision and XLA on only where a GPU is present, and picks
    MirroredStrategy when there are several GPUs. ``multi_worker`` reads the cluster from ``TF_CONFIG``.
    """
    keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow seeds in one call
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = len(tf.config.list_physical_devices("GPU"))
    use_mixed = _switch(mixed_precision, gpus > 0, "train.mixed_precision")
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    use_xla = _switch(jit_compile, gpus > 0, "train.jit_compile")
    if strategy == "auto":
        chosen = tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    elif strategy == "default":
        chosen = tf.distribute.get_strategy()
    elif strategy == "mirrored":
        # All GPUs; without GPUs, every logical CPU device (one unless the CPU was split, as in the tests).
        devices = None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        chosen = tf.distribute.MirroredStrategy(devices=devices)
    elif strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("`train.strategy: multi_worker` needs the TF_CONFIG environment variable (see README).")
        chosen = _nested_reduce(tf.distribute.MultiWorkerMirroredStrategy())
    else:
        raise ValueError(
            f"`train.strategy` must be one of auto, default, mirrored, multi_worker. Received: {strategy!r}"
        )
    logger.info(
        "runtime: %d GPU(s), strategy %s with %d replica(s), mixed precision %s, XLA %s",
        gpus, type(chosen).__name__, chosen.num_replicas_in_sync, use_mixed, use_xla,
    )
    resolver = getattr(chosen, "cluster_resolver", None) if strategy == "multi_worker" else None
    task_type = getattr(resolver, "task_type", None)
    task_id = getattr(resolver, "task_id", 0) or 0
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and not _has_chief())
    return Runtime(strategy=chosen, mixed_precision=use_mixed, jit_compile=use_xla, gpus=gpus, is_chief=is_chief)


def _nested_reduce(strategy: tf.distribute.Strategy) -> tf.distribute.Strategy:
    """Let ``strategy.reduce`` take a nested structure, as Keras 3's ``fit`` asks of it.

    Keras 3 reduces one whole ``(images, labels)`` batch to build the model symbolically, and reduces
    per-replica scalars (loss, metrics) with ``axis=0``; the collective all-reduce of
    MultiWorkerMirroredStrategy takes one value at a time and fails on both (keras-team/keras#20585).
    Reducing each element separately, and scalars across replicas only, is the intended operation.
    """
    reduce_one = strategy.reduce

    def reduce_item(reduce_op, item, axis):
        # Keras also asks for `axis=0` on per-replica scalars (loss, metrics): that is a reduction
        # across replicas only, `axis=None`.
        local = strategy.experimental_local_results(item)[0] if isinstance(item, tf.distribute.DistributedValues) else item
        if axis is not None and getattr(getattr(local, "shape", None), "rank", None) == 0:
            axis = None
        return reduce_one(reduce_op, item, axis=axis)

    def reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda item: reduce_item(reduce_op, item, axis), value)

    strategy.reduce = reduce
    return strategy


def _has_chief() -> bool:
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return bool(cluster.get("chief"))


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


class StageLiveCallback(DVCLiveCallback):
    """DVCLive's Keras callback with a per-model prefix (``stage1/train/loss``, ``stage2/eval/auc``…)
    and the learning rate, sharing one ``Live`` run (and its step count) across phases and stages."""

    def __init__(self, live: Live, prefix: str):
        super().__init__(live=live)
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, logs: dict | None = None):
        for metric, value in (logs or {}).items():
            name = standardize_metric_name(metric, "dvclive.keras")
            self.live.log_metric(f"{self.prefix}/{name}", float(value))
        self.live.next_step()

    def on_train_end(self, logs: dict | None = None):
        self.live.make_summary()  # the `with Live(...)` block ends the run, not each fit()


@dataclass(frozen=True)
class Phase:
    """One ``fit`` call: its name, epochs, learning rate and whether the backbones train."""

    name: str
    epochs: int
    learning_rate: float
    backbone_trainable: bool


def plan_phases(
    pretrained: bool, head_epochs: int, epochs: int, learning_rate: float, finetune_learning_rate: float
) -> list[Phase]:
    """The seed's phases: with pretrained weights, train the head on frozen backbones, then fine-tune
    everything at a lower rate. From random weights a frozen backbone teaches nothing: one phase."""
    if not pretrained:
        return [Phase("train", epochs, learning_rate, True)]
    phases = [Phase("frozen", head_epochs, learning_rate, False)] if head_epochs > 0 else []
    return phases + [Phase("finetune", epochs, finetune_learning_rate, True)]


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` (per epoch) whose file at ``filepath`` is always a complete model.

    Keras writes the ``.keras`` archive in place, so a run killed during the write would leave a truncated
    best checkpoint for the resumed run to trip over. Here Keras writes a hidden sibling and it is renamed
    over ``filepath`` (``os.replace``) once complete.
    """

    def __init__(self, filepath: str | os.PathLike, **kwargs):
        self.final_path = Path(filepath)
        super().__init__(str(self.final_path.with_name(f".{self.final_path.stem}.partial.keras")), **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        Path(self.filepath).unlink(missing_ok=True)  # left by a run killed mid-write
        super().on_epoch_end(epoch, logs)
        if os.path.exists(self.filepath):
            os.replace(self.filepath, self.final_path)


def _metrics(label_names: Sequence[str]) -> list[keras.metrics.Metric]:
    metrics: list[keras.metrics.Metric] = [
        keras.metrics.AUC(multi_label=len(label_names) > 1, num_labels=len(label_names) if len(label_names) > 1 else None, name="auc")
    ]
    if len(label_names) > 1:
        metrics += [LabelAUC(index, name=f"auc_{label}") for index, label in enumerate(label_names)]
    return metrics


def fit_phases(
    model: keras.Model,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    label_names: Sequence[str],
    phases: Sequence[Phase],
    loss: keras.losses.Loss,
    checkpoint_path: str,
    live: Live,
    prefix: str,
    patience: int,
    jit_compile: bool,
    strategy: tf.distribute.Strategy | None = None,
    resume: ResumeStore | None = None,
) -> keras.Model:
    """Run the phases; keep the best epoch (by validation AUC) of all of them in ``checkpoint_path``.

    Freezing sets ``trainable = False`` on the backbones: in Keras 3 a non-trainable
    BatchNormalization also runs in inference mode, which is what a frozen pretrained backbone needs;
    the model is recompiled (inside ``strategy.scope()``, so the optimizer's variables are mirrored like
    the model's) after every change of ``trainable``.

    With ``resume``, every finished epoch is snapshotted, and a run that finds a snapshot of ``prefix``
    continues from it: a network already complete is only reloaded, a phase cut short goes on from its
    next epoch with the optimizer's state, the best AUC so far and the early-stopping counter.

    Returns:
        The model with the best checkpoint's weights.
    """
    strategy = strategy or tf.distribute.get_strategy()
    stored = resume.network(prefix) if resume is not None else {}
    if stored.get("complete"):
        if os.path.exists(checkpoint_path):
            logger.info("%s: already trained by the interrupted run; loading its best checkpoint", prefix)
            _load_best(model, checkpoint_path)
            return model
        stored = {}  # its checkpoint is gone: train it again
    start_phase, epoch_done = int(stored.get("phase", 0)), int(stored.get("epoch", 0))
    phase_start = int(stored.get("phase_start", 0))
    phase_finished = bool(stored) and (
        stored.get("stopped") or epoch_done >= phase_start + phases[start_phase].epochs
    )
    if phase_finished:
        start_phase, phase_start = start_phase + 1, epoch_done
    best_so_far = stored.get("checkpoint_best")
    checkpoint = AtomicModelCheckpoint(
        checkpoint_path, monitor="val_auc", mode="max", save_best_only=True, verbose=0,
        initial_value_threshold=best_so_far,
    )
    logging_callback = StageLiveCallback(live, prefix)
    initial_epoch = epoch_done
    for index, phase in enumerate(phases):
        if index < start_phase:
            continue
        continuing = bool(stored) and index == start_phase and not phase_finished
        if not continuing:
            phase_start = initial_epoch
        for backbone in backbones_of(model):
            backbone.trainable = phase.backbone_trainable
        steps = max(1, int(train_data.cardinality().numpy())) * max(phase.epochs, 1)
        with strategy.scope():
            schedule = keras.optimizers.schedules.CosineDecay(phase.learning_rate, decay_steps=steps, alpha=0.05)
            model.compile(
                optimizer=keras.optimizers.Adam(schedule),
                loss=loss,
                metrics=_metrics(label_names),
                jit_compile=jit_compile,
            )
            if stored and index == start_phase:
                # The snapshot's weights; its optimizer state only if it belongs to this phase.
                resume.restore(prefix, model, optimizer=continuing)
        stopper = ResumableEarlyStopping(
            monitor="val_auc", mode="max", patience=patience, restore_best_weights=False,
            resume_wait=int(stored.get("stopper_wait", 0)) if continuing else 0,
            resume_best=stored.get("stopper_best") if continuing else None,
        )
        callbacks = [checkpoint, logging_callback, stopper]
        if resume is not None:
            callbacks.append(ResumeCallback(resume, prefix, index, phase_start, checkpoint, stopper, live))
        remaining = phase_start + phase.epochs - initial_epoch
        logger.info(
            "%s: phase %s, %d epoch(s) at lr %g%s", prefix, phase.name, remaining, phase.learning_rate,
            f" (resumed after epoch {initial_epoch})" if continuing else "",
        )
        history = model.fit(
            train_data,
            validation_data=val_data,
            epochs=phase_start + phase.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=2,
        )
        initial_epoch += len(history.epoch)
    if resume is not None:
        resume.mark_complete(prefix, live.step)
    if os.path.exists(checkpoint_path):
        _load_best(model, checkpoint_path)
    return model


def _load_best(model: keras.Model, checkpoint_path: str) -> None:
    best = keras.saving.load_model(checkpoint_path, compile=False, safe_mode=True)
    model.set_weights(best.get_weights())
