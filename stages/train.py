"""Stage `train`: the cascade (or a single-backbone model) with dvclive logging and best checkpoints."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from dvclive import Live

from ich.cli import StageError, run_stage
from ich.data import label_matrix, load_table, make_dataset
from ich.evaluation import tune_thresholds
from ich.files import prepare_output_dir, write_json
from ich.inference import MODEL_CARD, LoadedModels, predict_probabilities
from ich.labels import ANY, LABELS, SUBTYPES
from ich.models import build_any_classifier, build_single, build_subtype_fusion
from ich.params import ModelParams, PreprocessParams, TrainParams, load_params, section
from ich.resume import ResumeStore, fingerprint, trim_live_history
from ich.training import WeightedBinaryCrossentropy, configure_runtime, fit_phases, plan_phases, positive_weights

SPLIT_DIR = "data/split"
PNG_DIR = "data/png"
AUGMENTED_TABLE = "data/augmented.csv"
AUGMENTED_DIR = "data/augmented"
MODEL_DIR = "models"
LIVE_DIR = "dvclive/train"
RESUME_DIR = "checkpoints/train"
# What shapes a training run: a stored resume state from other params, data or code is not used.
RESUME_PARAMS = ("data", "sample", "preprocess", "split", "augment", "model", "train")
RESUME_FILES = (
    "data/split/train.csv", "data/split/val.csv", "data/augmented.csv",
    "stages/train.py", "ich/models.py", "ich/training.py", "ich/data.py", "ich/resume.py",
)

logger = logging.getLogger("ich")


def main() -> None:
    params = load_params()
    model_params = section(params, "model", ModelParams)
    train_params = section(params, "train", TrainParams)
    preprocess = section(params, "preprocess", PreprocessParams)
    size = preprocess.image_size
    shape = (size, size, 3)

    train = pd.concat(
        [load_table(f"{SPLIT_DIR}/train.csv", PNG_DIR), load_table(AUGMENTED_TABLE, AUGMENTED_DIR, augmented=True)],
        ignore_index=True,
    )
    val = load_table(f"{SPLIT_DIR}/val.csv", PNG_DIR)
    if train.empty or val.empty:
        raise StageError("The train or validation split is empty; lower `split` fractions or sample more images.")
    runtime = configure_runtime(
        train_params.seed, train_params.deterministic, train_params.mixed_precision, train_params.jit_compile, train_params.strategy
    )
    batch = train_params.batch_size * runtime.strategy.num_replicas_in_sync
    pretrained = model_params.weights is not None
    phases = plan_phases(pretrained, train_params.head_epochs, train_params.epochs, train_params.learning_rate, train_params.finetune_learning_rate)

    def datasets(frame_train, frame_val, labels):
        targets = label_matrix(frame_train, labels)
        weights = positive_weights(targets, train_params.max_positive_weight) if train_params.positive_weights else [1.0] * len(labels)
        train_data = make_dataset(frame_train["path"].tolist(), targets, size, batch, True, train_params.seed, train_params.cache_images)
        val_data = make_dataset(frame_val["path"].tolist(), label_matrix(frame_val, labels), size, batch, False, train_params.seed, train_params.cache_images)
        return train_data, val_data, WeightedBinaryCrossentropy(weights), weights

    # Non-chief workers of a multi-worker run train in lockstep but write into a scratch folder.
    root = Path(".") if runtime.is_chief else Path(tempfile.mkdtemp(prefix="ich-worker-"))
    output = prepare_output_dir(root / MODEL_DIR)
    store = ResumeStore(
        root / RESUME_DIR,
        fingerprint({name: params.get(name) for name in RESUME_PARAMS}, RESUME_FILES),
        enabled=runtime.is_chief,
    )
    files: dict[str, str] = {}
    card: dict[str, object] = {}
    live_step = store.live_step
    if live_step is not None:
        trim_live_history(root / LIVE_DIR, live_step)
    with Live(str(root / LIVE_DIR), dvcyaml=False, save_dvc_exp=False, resume=live_step is not None) as live:
        if live_step is not None:
            live.step = live_step
        live.log_params({"arch": model_params.arch, "phases": [phase.name for phase in phases]})
        fit_args = dict(
            live=live, patience=train_params.early_stopping_patience, jit_compile=runtime.jit_compile,
            strategy=runtime.strategy, resume=store,
        )
        if model_params.arch in ("cascade", "cascade_warmstart"):
            # Stage 1: every training image, one output: any hemorrhage.
            train_data, val_data, loss, weights1 = datasets(train, val, [ANY])
            with runtime.strategy.scope():
                stage1 = build_any_classifier(
                    model_params.efficientnet, shape, model_params.weights, model_params.dropout, model_params.online_augmentation
                )
            fit_phases(stage1, train_data, val_data, [ANY], phases, loss, str(store.best_checkpoint("stage1")), prefix="stage1", **fit_args)
            # Stage 2: hemorrhage-positive images only, five outputs: P(subtype | hemorrhage).
            positive_train, positive_val = train[train[ANY] == 1], val[val[ANY] == 1]
            if positive_train.empty or positive_val.empty:
                raise StageError("Stage 2 needs hemorrhage-positive images in train and val; sample more images.")
            train_data, val_data, loss, weights2 = datasets(positive_train, positive_val, SUBTYPES)
            with runtime.strategy.scope():
                stage2 = build_subtype_fusion(
                    model_params.efficientnet, model_params.convnext, shape, len(SUBTYPES), model_params.weights,
                    model_params.dropout, model_params.fusion_units, model_params.online_augmentation,
                )
                if model_params.arch == "cascade_warmstart":
                    # The modified cascade: stage 2's EfficientNetV2 starts from stage 1's trained backbone.
                    stage2.get_layer(model_params.efficientnet).set_weights(stage1.get_layer(model_params.efficientnet).get_weights())
            fit_phases(stage2, train_data, val_data, SUBTYPES, phases, loss, str(store.best_checkpoint("stage2")), prefix="stage2", **fit_args)
            files = {"stage1": "stage1.keras", "stage2": "stage2.keras"}
            networks = {"stage1": stage1, "stage2": stage2}
            card["positive_weights"] = {"stage1": weights1, "stage2": weights2}
        else:
            backbone = model_params.efficientnet if model_params.arch == "efficientnetv2" else model_params.convnext
            train_data, val_data, loss, weights = datasets(train, val, LABELS)
            with runtime.strategy.scope():
                model = build_single(
                    backbone, shape, len(LABELS), model_params.weights, model_params.dropout, model_params.arch,
                    model_params.online_augmentation,
                )
            fit_phases(model, train_data, val_data, LABELS, phases, loss, str(store.best_checkpoint("model")), prefix="model", **fit_args)
            files = {"model": "model.keras"}
            networks = {"model": model}
            card["positive_weights"] = {"model": weights}

        # Thresholds for inference: best F1 per label on the validation split (product combination).
        val_all = make_dataset(val["path"].tolist(), label_matrix(val), size, batch, False, train_params.seed, False)
        probabilities = predict_probabilities(LoadedModels(card={}, networks=networks), val_all)
        thresholds = tune_thresholds(label_matrix(val), probabilities)
        card.update(
            {
                "arch": model_params.arch,
                "backbones": {"efficientnet": model_params.efficientnet, "convnext": model_params.convnext},
                "weights": model_params.weights,
                "labels": list(LABELS),
                "image_size": size,
                "input_scaling": "RGB PNG / 255 -> [0, 1]; each model normalises for its backbone",
                "windows": preprocess.windows,
                "thresholds": thresholds,
                "thresholds_from": "best F1 on the validation split, product combination",
                "files": files,
                "train_images": int(len(train)),
                "mixed_precision": runtime.mixed_precision,
            }
        )
        for name, filename in files.items():
            shutil.copyfile(store.best_checkpoint(name), output / filename)
        write_json(card, output / MODEL_CARD)
        live.log_params({"thresholds": thresholds})
    store.finish()
    if not runtime.is_chief:
        shutil.rmtree(root, ignore_errors=True)
    logger.info("train: %s saved to %s (%s)", model_params.arch, MODEL_DIR, ", ".join(files.values()))


if __name__ == "__main__":
    run_stage(main)
