"""Stage `index`: the labels CSV as one row per image, joined with a header-only scan of every labelled DICOM."""

from __future__ import annotations

import logging

from tqdm import tqdm

from ich.core.files import write_csv, write_json
from ich.core.params import DataParams, IndexParams, PreprocessParams, load_params, section
from ich.core.quarantine import quarantine_failure
from ich.core.runner import StageError, run_stage
from ich.data.index import build_index, index_headers
from ich.data.labels_csv import parse_long_csv
from ich.data.pseudonyms import pseudonym_key

INDEX, QUARANTINE, METRICS = "data/index.csv", "data/index_quarantine.csv", "metrics/index.json"


def main() -> None:
    params = load_params()
    data, index = section(params, "data", DataParams), section(params, "index", IndexParams)
    max_fraction = section(params, "preprocess", PreprocessParams).max_quarantine_fraction
    key = pseudonym_key(index.pseudonymize_ids)
    parsed = parse_long_csv(data.labels_csv)
    if parsed.wide.empty:
        raise StageError(
            f"No usable image in {data.labels_csv!r} ({len(parsed.rejected)} problem rows). Check `data.labels_csv`."
        )
    ids = parsed.wide["ID"].tolist()
    headers = tqdm(index_headers(ids, data.dicom_dir, index.workers), total=len(ids), desc="index", unit="file", mininterval=1.0)
    outcome = build_index(parsed.wide, parsed.rejected, headers, key)
    write_csv(outcome.index, INDEX)
    write_csv(outcome.quarantine, QUARANTINE)
    write_json({**parsed.counts, **outcome.metrics}, METRICS)
    failure = quarantine_failure(
        outcome.metrics["unreadable"], len(ids), outcome.reasons, max_fraction, QUARANTINE, "labelled images"
    )
    if failure:
        raise StageError(failure)
    logging.getLogger("ich").info(
        "index: %d images of %d series, %d patients -> %s; %d unreadable, %d label problems (%s)",
        len(outcome.index),
        outcome.metrics["series"],
        outcome.metrics["patients"],
        INDEX,
        outcome.metrics["unreadable"],
        outcome.metrics["label_problems"],
        QUARANTINE,
    )


if __name__ == "__main__":
    run_stage(main)
