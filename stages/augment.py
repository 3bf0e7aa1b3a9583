"""Stage `augment`: oversample minority subtypes of the training split with albumentations."""

from __future__ import annotations

import logging

import pandas as pd
from tqdm import tqdm

from ich.core.files import prepare_output_dir, write_csv, write_json
from ich.core.labels import SUBTYPES
from ich.core.params import AugmentParams, PreprocessParams, load_params, section
from ich.core.params import context_slices as model_context_slices
from ich.core.runner import run_stage
from ich.data.augment import build_pipeline, plan_copies, write_augmented
from ich.data.context import neighbour_ids

TRAIN = "data/split/train.csv"
PNG_DIR = "data/png"
OUTPUT_DIR = "data/augmented"
TABLE = "data/augmented.csv"
METRICS = "metrics/augment.json"

logger = logging.getLogger("ich")


def main() -> None:
    all_params = load_params()
    params, context_slices = section(all_params, "augment", AugmentParams), model_context_slices(all_params)
    train = pd.read_csv(TRAIN, dtype={"ID": str, "PatientID": str, "SeriesInstanceUID": str})
    # 2.5D input: each copy is made from the slice composed with its neighbours (ich.data.context), transformed as one.
    neighbours = dict(zip(train["ID"], zip(*neighbour_ids(train, context_slices)))) if context_slices else None
    plan = plan_copies(train, params.target_per_label, params.max_copies_per_image, params.seed)
    output = prepare_output_dir(OUTPUT_DIR)
    copies = tqdm(zip(plan["source_ID"], plan["ID"]), total=len(plan), desc="augment", unit="img", mininterval=1.0)
    # The copies take the preprocessed images' layout: PNG files, or shards (preprocess.layout).
    layout = section(all_params, "preprocess", PreprocessParams)
    shard_size = layout.images_per_shard if layout.layout == "shards" else None
    write_augmented(copies, PNG_DIR, output, build_pipeline(params), neighbours, images_per_shard=shard_size)
    write_csv(plan, TABLE)
    metrics = {
        "copies": len(plan),
        "train_positives": {label: int(train[label].sum()) for label in SUBTYPES},
        "after_augmentation": {label: int(train[label].sum() + plan[label].sum()) for label in SUBTYPES},
    }
    write_json(metrics, METRICS)
    logger.info("augment: %d copies -> %s; positives per subtype now %s", len(plan), output, metrics["after_augmentation"])


if __name__ == "__main__":
    run_stage(main)
