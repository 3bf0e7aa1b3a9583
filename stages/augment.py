"""Stage `augment`: oversample minority subtypes of the training split with albumentations."""

from __future__ import annotations

import logging

import cv2
import pandas as pd
from tqdm import tqdm

from ich.augment import build_pipeline, plan_copies
from ich.runner import StageError, run_stage
from ich.files import atomic_write_bytes, image_path, prepare_output_dir, write_csv, write_json
from ich.labels import SUBTYPES
from ich.params import AugmentParams, load_params, section
from ich.preprocess import encode_png

TRAIN = "data/split/train.csv"
PNG_DIR = "data/png"
OUTPUT_DIR = "data/augmented"
TABLE = "data/augmented.csv"
METRICS = "metrics/augment.json"

logger = logging.getLogger("ich")


def main() -> None:
    params = section(load_params(), "augment", AugmentParams)
    train = pd.read_csv(TRAIN, dtype={"ID": str, "PatientID": str})
    plan = plan_copies(train, params.target_per_label, params.max_copies_per_image, params.seed)
    output = prepare_output_dir(OUTPUT_DIR)
    transform = build_pipeline(params)
    for source_id, new_id in tqdm(zip(plan["source_ID"], plan["ID"]), total=len(plan), desc="augment", unit="img", mininterval=1.0):
        bgr = cv2.imread(str(image_path(PNG_DIR, source_id, ".png")), cv2.IMREAD_COLOR)
        if bgr is None:
            raise StageError(f"Cannot read {PNG_DIR}/{source_id}.png listed in {TRAIN}; rerun `dvc repro preprocess`.")
        augmented = transform(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))["image"]
        atomic_write_bytes(output / f"{new_id}.png", encode_png(augmented))
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
