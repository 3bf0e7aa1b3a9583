"""Stage `sample`: the balanced training set by whole series from the training patients; val and test whole."""

from __future__ import annotations

import logging

import pandas as pd

from ich.core.files import write_csv, write_json
from ich.core.labels import LABELS
from ich.core.params import SampleParams, load_params, section
from ich.core.runner import StageError, run_stage
from ich.data.sample import select_images
from ich.data.tables import read_index

INDEX, ASSIGNMENT, SAMPLED, METRICS = "data/index.csv", "data/split_assignment.csv", "data/sampled.csv", "metrics/sample.json"


def main() -> None:
    params = section(load_params(), "sample", SampleParams)
    frame = read_index(INDEX).merge(pd.read_csv(ASSIGNMENT, dtype=str), on="ID", how="inner", validate="one_to_one")
    selected = select_images(frame, params.per_label, params.seed, params.holdout)
    if not (selected["split"] == "train").any():
        raise StageError("No training image was sampled; raise `sample.per_label` or `split.train_fraction`.")
    write_csv(selected, SAMPLED)
    metrics = {
        name: {
            "images": int(len(part)),
            "series": int(part["SeriesInstanceUID"].nunique()),
            **{f"positive_{label}": int(part[label].sum()) for label in LABELS},
        }
        for name, part in selected.groupby("split")
    }
    write_json(metrics, METRICS)
    logging.getLogger("ich").info(
        "sample: %s -> %s", ", ".join(f"{name} {part['images']} images" for name, part in metrics.items()), SAMPLED
    )


if __name__ == "__main__":
    run_stage(main)
