"""Stage `preprocess`: DICOM -> HU -> 3 windows -> RGB PNG at `preprocess.image_size`, plus metadata and quarantine."""

from __future__ import annotations

import logging

import pandas as pd
from tqdm import tqdm

from ich.runner import StageError, run_stage
from ich.files import prepare_output_dir, write_csv, write_json
from ich.params import PreprocessParams, load_params, section
from ich.preprocess import collect_outcome, process_many, quarantine_failure
from ich.pseudonyms import pseudonym_key
from ich.windows import windows_from_params

SAMPLED = "data/sampled.csv"
REJECTS = "data/sample_rejects.csv"
DICOM_DIR = "data/dicom"
PNG_DIR = "data/png"
METADATA = "data/metadata.csv"
QUARANTINE = "data/quarantine.csv"
METRICS = "metrics/preprocess.json"

logger = logging.getLogger("ich")


def main() -> None:
    params = section(load_params(), "preprocess", PreprocessParams)
    key = pseudonym_key(params.pseudonymize_ids)
    windows = windows_from_params(params.window_dicts())
    ids = pd.read_csv(SAMPLED, usecols=["ID"], dtype=str)["ID"].tolist()
    output = prepare_output_dir(PNG_DIR)
    results = process_many(
        ids, DICOM_DIR, output, params.image_size, windows, params.workers,
        rsna_pixel_fix=params.rsna_pixel_fix, file_timeout_s=params.file_timeout_s,
    )
    progress = tqdm(results, total=len(ids), desc="preprocess", unit="img", mininterval=1.0)
    rejects = pd.read_csv(REJECTS, dtype=str, keep_default_na=False)
    outcome = collect_outcome(progress, len(ids), rejects, key)
    write_csv(outcome.quarantine, QUARANTINE)
    write_csv(outcome.metadata, METADATA)
    write_json(outcome.metrics, METRICS)
    failure = quarantine_failure(outcome, params.max_quarantine_fraction, QUARANTINE)
    if failure:
        raise StageError(failure)
    logger.info(
        "preprocess: %d PNGs -> %s, %d quarantined (%s)", len(outcome.metadata), output, outcome.metrics["quarantined"],
        ", ".join(f"{count} {reason}" for reason, count in outcome.reasons.most_common(3)) or "none",
    )


if __name__ == "__main__":
    run_stage(main)
