"""Stage `split`: patient-grouped, multi-label-stratified train/val/test CSVs."""

from __future__ import annotations

import logging

import pandas as pd

from ich.files import write_csv, write_json
from ich.labels import LABELS
from ich.params import SplitParams, load_params, section
from ich.runner import StageError, run_stage
from ich.split import SPLITS, grouped_stratified_split

SAMPLED = "data/sampled.csv"
METADATA = "data/metadata.csv"
OUTPUT_DIR = "data/split"
METRICS = "metrics/split.json"
COLUMNS = ["ID", *LABELS, "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "position_z"]

logger = logging.getLogger("ich")


def main() -> None:
    params = section(load_params(), "split", SplitParams)
    labels = pd.read_csv(SAMPLED, dtype={"ID": str})
    metadata = pd.read_csv(METADATA, dtype={"ID": str, "PatientID": str, "StudyInstanceUID": str, "SeriesInstanceUID": str}, keep_default_na=False, na_values={"position_z": [""]})
    frame = labels.merge(metadata, on="ID", how="inner", validate="one_to_one")
    if frame.empty:
        raise StageError(f"No preprocessed image to split: {METADATA} and {SAMPLED} share no ID.")
    # Without a PatientID the series is the safest group we have (never the single image).
    frame["PatientID"] = frame["PatientID"].where(frame["PatientID"] != "", "series:" + frame["SeriesInstanceUID"])
    fractions = (params.train_fraction, params.val_fraction, params.test_fraction)
    assignment = grouped_stratified_split(frame, fractions, params.seed)
    metrics: dict[str, object] = {}
    for name in SPLITS:
        part = frame[assignment == name].sort_values("ID")[COLUMNS]
        write_csv(part, f"{OUTPUT_DIR}/{name}.csv")
        metrics[name] = {
            "images": len(part),
            "patients": int(part["PatientID"].nunique()),
            **{f"positive_{label}": int(part[label].sum()) for label in LABELS},
        }
        logger.info("split: %s %d images, %d patients", name, len(part), part["PatientID"].nunique())
    write_json(metrics, METRICS)


if __name__ == "__main__":
    run_stage(main)
