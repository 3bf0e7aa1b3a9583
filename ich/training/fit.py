"""The train stage's computation: the recipe named by ``model.arch`` trained on the train (+ augmented) images,
early-stopped on validation, resumable after a kill, logged by dvclive; its thresholds tuned on validation; and the
model folder (the networks and their card) written whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ich.core.files import prepare_output_dir
from ich.core.labels import LABELS, label_matrix
from ich.core.params import ModelParams, PreprocessParams, TrainParams
from ich.evaluation.metrics import tune_thresholds
from ich.models.card import ModelCard, model_card, save_model_folder
from ich.models.networks import check_backbone
from ich.models.recipes import get_recipe
from ich.training.resume import ResumeStore, resumed_live, stage_fingerprint
from ich.training.runtime import configure_runtime, output_root
from ich.training.trainer import Trainer, plan_phases

__all__ = ["train_model_folder"]


def train_model_folder(
    images: pd.DataFrame,
    val: pd.DataFrame,
    model: ModelParams,
    train: TrainParams,
    preprocess: PreprocessParams,
    *,
    model_dir: str | os.PathLike,
    live_dir: str | os.PathLike,
    resume_dir: str | os.PathLike,
) -> ModelCard:
    """Train ``model.arch`` and save the model folder; returns its card.

    Args:
        images: the training images (train split and augmented copies; :func:`ich.core.images.load_table`).
        val: the validation split, likewise.
        model, train, preprocess: the params sections.
        model_dir: the model folder (replaced whole).
        live_dir: dvclive's folder (its curves continue after a resume).
        resume_dir: checkpoints and state for a resume after a kill (``persist: true`` in dvc.yaml).
    """
    recipe = get_recipe(model.arch)
    check_backbone(model.efficientnet, "efficientnetv2"), check_backbone(model.convnext, "convnext")
    runtime = configure_runtime(train.seed, train.deterministic, train.mixed_precision, train.jit_compile, train.strategy)
    phases = plan_phases(
        model.weights is not None, train.head_epochs, train.epochs, train.learning_rate, train.finetune_learning_rate
    )
    with output_root(runtime) as root:
        output = prepare_output_dir(Path(root) / model_dir)
        store = ResumeStore(Path(root) / resume_dir, stage_fingerprint("train"), enabled=runtime.is_chief)
        with resumed_live(Path(root) / live_dir, store) as live:
            live.log_params({"arch": model.arch, "phases": [phase.name for phase in phases]})
            trainer = Trainer(
                images,
                val,
                preprocess.image_size,
                train.batch_size * runtime.strategy.num_replicas_in_sync,
                train.seed,
                phases,
                runtime,
                live,
                store,
                train.positive_weights,
                train.max_positive_weight,
                train.early_stopping_patience,
                train.cache_images,
                train.cache_budget_gb,
                model.context_slices,
            )
            networks = recipe.fit(trainer, model)
            # Thresholds for inference: best F1 per label on the validation split, with the configured combination.
            val_images = trainer.dataset(val, LABELS, shuffle=False, cache=False)
            thresholds = tune_thresholds(
                label_matrix(val), recipe.predict(networks, val_images, model.combination, model.gate_threshold)
            )
            card = model_card(
                arch=model.arch,
                described=recipe.describe(model),
                networks={name: f"{name}.keras" for name in networks},
                image_size=preprocess.image_size,
                windows=preprocess.window_dicts(),
                weights=model.weights,
                thresholds=thresholds,
                combination=model.combination,
                gate_threshold=model.gate_threshold,
                train_images=len(images),
                positive_weights=trainer.positive_weights,
                mixed_precision=runtime.mixed_precision,
                context_slices=model.context_slices,
                rsna_pixel_fix=preprocess.rsna_pixel_fix,
            )
            save_model_folder(output, card, {name: store.best_checkpoint(name) for name in networks})
            logged: dict[str, Any] = {"thresholds": thresholds}
            live.log_params(logged)
        store.finish()
    return card
