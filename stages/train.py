"""Stage `train`: the recipe named by `model.arch`, trained with dvclive logging, resumable, into models/."""

from __future__ import annotations

import logging

import pandas as pd

from ich.core.files import prepare_output_dir
from ich.core.labels import LABELS
from ich.core.params import ModelParams, PreprocessParams, TrainParams, load_params, section
from ich.core.runner import StageError, run_stage
from ich.evaluation.metrics import tune_thresholds
from ich.models.card import model_card, save_model_folder
from ich.models.networks import check_backbone
from ich.models.recipes import get_recipe
from ich.training.datasets import label_matrix, load_table
from ich.training.resume import ResumeStore, resumed_live, stage_fingerprint
from ich.training.runtime import configure_runtime, output_root
from ich.training.trainer import Trainer, plan_phases

PNG_DIR, AUGMENTED_DIR = "data/png", "data/augmented"
TRAIN, AUGMENTED, VAL = "data/split/train.csv", "data/augmented.csv", "data/split/val.csv"
MODEL_DIR, LIVE_DIR, RESUME_DIR = "models/cnn", "dvclive/train", "checkpoints/train"


def main() -> None:
    params = load_params()
    model, train, preprocess = (
        section(params, name, cls)
        for name, cls in (("model", ModelParams), ("train", TrainParams), ("preprocess", PreprocessParams))
    )
    recipe = get_recipe(model.arch)
    check_backbone(model.efficientnet, "efficientnetv2"), check_backbone(model.convnext, "convnext")
    images = pd.concat([load_table(TRAIN, PNG_DIR), load_table(AUGMENTED, AUGMENTED_DIR, augmented=True)], ignore_index=True)
    val = load_table(VAL, PNG_DIR)
    if images.empty or val.empty:
        raise StageError("The train or validation split is empty; lower `split` fractions or sample more images.")
    runtime = configure_runtime(train.seed, train.deterministic, train.mixed_precision, train.jit_compile, train.strategy)
    phases = plan_phases(
        model.weights is not None, train.head_epochs, train.epochs, train.learning_rate, train.finetune_learning_rate
    )
    with output_root(runtime) as root:
        output = prepare_output_dir(root / MODEL_DIR)
        store = ResumeStore(root / RESUME_DIR, stage_fingerprint("train"), enabled=runtime.is_chief)
        with resumed_live(root / LIVE_DIR, store) as live:
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
            live.log_params({"thresholds": thresholds})
        store.finish()
    logging.getLogger("ich").info("train: %s saved to %s (%s)", model.arch, MODEL_DIR, ", ".join(card.files.values()))


if __name__ == "__main__":
    run_stage(main)
