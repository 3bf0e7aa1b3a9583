"""Stage `split`: every indexed image to train, val or test by patient, stratified over the six labels, before any sampling."""

from __future__ import annotations

import logging

from ich.core.files import write_csv, write_json
from ich.core.params import SplitParams, load_params, section
from ich.core.runner import StageError, run_stage
from ich.data.split import assign_splits, split_summary
from ich.data.tables import read_index

INDEX, ASSIGNMENT, METRICS = "data/index.csv", "data/split_assignment.csv", "metrics/split.json"


def main() -> None:
    params = section(load_params(), "split", SplitParams)
    index = read_index(INDEX)
    if index.empty:
        raise StageError(f"{INDEX} holds no image; check `data.labels_csv` and `data.dicom_dir`.")
    fractions = (params.train_fraction, params.val_fraction, params.test_fraction)
    split = assign_splits(index, fractions, params.seed, params.max_val_series, params.max_test_series)
    write_csv(index[["ID"]].assign(split=split.to_numpy()), ASSIGNMENT)
    summary = split_summary(index, split)
    write_json(summary, METRICS)
    for name, part in summary.items():
        logging.getLogger("ich").info(
            "split: %s %d images, %d series, %d patients (any %.1f %%)",
            name,
            part["images"],
            part["series"],
            part["patients"],
            100 * (part["prevalence"]["any"] or 0),
        )


if __name__ == "__main__":
    run_stage(main)
