"""The shared phase loop every recipe trains through: :class:`Trainer`, :func:`fit_phases` and its callbacks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from dvclive.keras import DVCLiveCallback
from dvclive.utils import standardize_metric_name

from dvclive import Live
from ich.core.images import LOCATION_COLUMNS
from ich.core.labels import label_matrix
from ich.data.context import neighbour_ids
from ich.models.losses import WeightedBinaryCrossentropy, auc_metrics, positive_weights
from ich.models.networks import backbones_of
from ich.training.datasets import make_dataset, plan_cache
from ich.training.resume import ResumableEarlyStopping, ResumeCallback, ResumeStore
from ich.training.runtime import Runtime

__all__ = [
    "Trainer",
    "StageLiveCallback",
    "Phase",
    "plan_phases",
    "fit_phases",
    "AtomicModelCheckpoint",
]

logger = logging.getLogger("ich")


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
    phase_finished = bool(stored) and (stored.get("stopped") or epoch_done >= phase_start + phases[start_phase].epochs)
    if phase_finished:
        start_phase, phase_start = start_phase + 1, epoch_done
    best_so_far = stored.get("checkpoint_best")
    checkpoint = AtomicModelCheckpoint(
        checkpoint_path,
        monitor="val_auc",
        mode="max",
        save_best_only=True,
        verbose=0,
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
                metrics=auc_metrics(label_names),
                jit_compile=jit_compile,
            )
            if stored and index == start_phase:
                assert resume is not None  # `stored` is empty without a resume store
                # The snapshot's weights; its optimizer state only if it belongs to this phase.
                resume.restore(prefix, model, optimizer=continuing)
        stopper = ResumableEarlyStopping(
            monitor="val_auc",
            mode="max",
            patience=patience,
            restore_best_weights=False,
            resume_wait=int(stored.get("stopper_wait", 0)) if continuing else 0,
            resume_best=stored.get("stopper_best") if continuing else None,
        )
        callbacks = [checkpoint, logging_callback, stopper]
        if resume is not None:
            callbacks.append(ResumeCallback(resume, prefix, index, phase_start, checkpoint, stopper, live))
        remaining = phase_start + phase.epochs - initial_epoch
        logger.info(
            "%s: phase %s, %d epoch(s) at lr %g%s",
            prefix,
            phase.name,
            remaining,
            phase.learning_rate,
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


@dataclass
class Trainer:
    """What a recipe trains its networks through: the data, the runtime and the shared phase loop.

    A recipe calls :meth:`fit` once per network, in order; each network gets its own class-weighted loss,
    its own best checkpoint in the resume store and its own dvclive prefix (its ``name``), and all of
    them share one ``Live`` run and one set of phases.

    Args:
        train: training images (the split plus its augmented copies) with their locations (``path, offset, size``:
            :func:`ich.core.images.load_table`).
        val: validation images, likewise.
        image_size: side of the square input images in pixels.
        batch_size: the global batch (per replica x replicas).
        seed: shuffling seed of the input pipelines.
        phases: from :func:`plan_phases`.
        runtime: from :func:`ich.training.runtime.configure_runtime`.
        live: the stage's dvclive run.
        store: the resume store; best checkpoints are kept there until the run finishes.
        use_positive_weights / max_positive_weight / patience / cache_images / cache_budget_gb: the ``train.*`` switches.
        context_slices: ``model.context_slices``; above 0 each image is composed with its neighbours along z in
            its series (:mod:`ich.data.context`), except augmented copies (rows with a ``source_ID``), which the augment
            stage already composed.
    """

    train: pd.DataFrame
    val: pd.DataFrame
    image_size: int
    batch_size: int
    seed: int
    phases: Sequence[Phase]
    runtime: Runtime
    live: Live
    store: ResumeStore
    use_positive_weights: bool = True
    max_positive_weight: float = 10.0
    patience: int = 4
    cache_images: bool | Literal["auto"] = True
    #: With ``cache_images: auto``: the most memory the cached decoded images may take, in GiB.
    cache_budget_gb: float = 8.0
    #: 2.5D input (``model.context_slices``): 0 = single slices.
    context_slices: int = 0
    #: The positive weights each network's loss used, by network name (recorded in the model card).
    positive_weights: dict[str, list[float]] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def dataset(self, frame: pd.DataFrame, labels: Sequence[str], shuffle: bool, cache: bool | None = None) -> tf.data.Dataset:
        """``frame``'s images and ``labels`` as a batched dataset (see :func:`ich.training.datasets.make_dataset`);
        ``cache`` None: as :meth:`cache_plan` decides for ``frame`` alone."""
        return make_dataset(
            frame[list(LOCATION_COLUMNS)],
            label_matrix(frame, labels),
            self.image_size,
            self.batch_size,
            shuffle,
            self.seed,
            self.cache_plan(len(frame))[0] if cache is None else cache,
            self._neighbour_locations(frame),
        )

    def cache_plan(self, *images: int) -> list[bool]:
        """:func:`ich.training.datasets.plan_cache` for datasets of ``images`` images used together (train, then val)."""
        return plan_cache(images, self.image_size, self.cache_images, self.cache_budget_gb)

    def __post_init__(self) -> None:
        # Neighbours are found in the whole split, before a recipe selects rows (stage 2 trains on positives only).
        self.train, self.val = self._with_neighbours(self.train), self._with_neighbours(self.val)

    def _with_neighbours(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.context_slices == 0:
            return frame
        columns = {
            side: {column: frame[column].to_numpy(copy=True) for column in LOCATION_COLUMNS} for side in ("before", "after")
        }
        slices = frame["source_ID"].isna().to_numpy() if "source_ID" in frame else np.ones(len(frame), dtype=bool)
        if slices.any():
            rows = frame[slices]
            position = pd.Series(np.arange(len(rows)), index=rows["ID"].to_numpy())
            for side, ids in zip(("before", "after"), neighbour_ids(rows, self.context_slices)):
                picked = position.loc[list(ids)].to_numpy()
                for column in LOCATION_COLUMNS:
                    columns[side][column][slices] = rows[column].to_numpy()[picked]
        return frame.assign(**{f"{column}_{side}": values for side, by in columns.items() for column, values in by.items()})

    def _neighbour_locations(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        if self.context_slices == 0:
            return None
        if "path_before" not in frame:
            frame = self._with_neighbours(frame)
        return tuple(
            pd.DataFrame({column: frame[f"{column}_{side}"].to_numpy() for column in LOCATION_COLUMNS})
            for side in ("before", "after")
        )

    def fit(
        self,
        name: str,
        build: Callable[[], keras.Model],
        labels: Sequence[str],
        train: pd.DataFrame | None = None,
        val: pd.DataFrame | None = None,
    ) -> keras.Model:
        """Build a network (inside the strategy's scope) and train it on ``labels`` through the phases.

        Args:
            name: the network's name: its checkpoint, its dvclive prefix, its file in the model folder.
            build: returns the untrained network (called once, inside ``strategy.scope()``).
            labels: the network's outputs, in order.
            train, val: the images to use (default: all of :attr:`train` and :attr:`val`).

        Returns:
            The network with its best epoch's weights.
        """
        train = self.train if train is None else train
        val = self.val if val is None else val
        targets = label_matrix(train, labels)
        weights = positive_weights(targets, self.max_positive_weight) if self.use_positive_weights else [1.0] * len(labels)
        self.positive_weights[name] = weights
        cache_train, cache_val = self.cache_plan(len(train), len(val))
        logger.info(
            "%s: %d training images (%s), %d validation images (%s)",
            name,
            len(train),
            "cached in memory" if cache_train else "streamed",
            len(val),
            "cached in memory" if cache_val else "streamed",
        )
        train_data = self.dataset(train, labels, shuffle=True, cache=cache_train)
        val_data = self.dataset(val, labels, shuffle=False, cache=cache_val)
        with self.runtime.strategy.scope():
            model = build()
        return fit_phases(
            model,
            train_data,
            val_data,
            labels,
            self.phases,
            WeightedBinaryCrossentropy(weights),
            str(self.store.best_checkpoint(name)),
            live=self.live,
            prefix=name,
            patience=self.patience,
            jit_compile=self.runtime.jit_compile,
            strategy=self.runtime.strategy,
            resume=self.store,
        )
