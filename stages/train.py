"""Stage `train`: the recipe named by `model.arch`, trained with dvclive logging, resumable, into models/cnn/
(ich.training.fit)."""

from __future__ import annotations

import logging

import pandas as pd

from ich.core.images import load_table
from ich.core.params import ModelParams, PreprocessParams, TrainParams, load_params, section
from ich.core.runner import StageError, run_stage
from ich.training.fit import train_model_folder

PNG_DIR, AUGMENTED_DIR = "data/png", "data/augmented"
TRAIN, AUGMENTED, VAL = "data/split/train.csv", "data/augmented.csv", "data/split/val.csv"
MODEL_DIR, LIVE_DIR, RESUME_DIR = "models/cnn", "dvclive/train", "checkpoints/train"


def main() -> None:
    params = load_params()
    model, train, preprocess = (
        section(params, name, cls)
        for name, cls in (("model", ModelParams), ("train", TrainParams), ("preprocess", PreprocessParams))
    )
    images = pd.concat([load_table(TRAIN, PNG_DIR), load_table(AUGMENTED, AUGMENTED_DIR, augmented=True)], ignore_index=True)
    val = load_table(VAL, PNG_DIR)
    if images.empty or val.empty:
        raise StageError("The train or validation split is empty; lower `split` fractions or sample more images.")
    card = train_model_folder(
        images, val, model, train, preprocess, model_dir=MODEL_DIR, live_dir=LIVE_DIR, resume_dir=RESUME_DIR
    )
    logging.getLogger("ich").info("train: %s saved to %s (%s)", model.arch, MODEL_DIR, ", ".join(card.files.values()))


if __name__ == "__main__":
    run_stage(main)
