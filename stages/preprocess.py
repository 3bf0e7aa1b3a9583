"""Stage `preprocess`: DICOM -> HU -> 3 windows -> RGB PNG at `preprocess.image_size` (one file per image, or packed
in shards: `preprocess.layout`); the per-split tables of the processed images; every unusable image in the quarantine
list (ich.data.preprocess)."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the imports below, so the logged time includes them

import logging

import pandas as pd
from tqdm import tqdm

from ich.core.files import prepare_output_dir
from ich.core.images import ShardSet
from ich.core.params import CopyParams, DataParams, PreprocessParams, load_params, section
from ich.core.quarantine import quarantine_failure
from ich.core.runner import StageError, run_stage
from ich.data.preprocess import collect_outcome, process_many, sources, store_in_shards
from ich.data.tables import read_index
from ich.imaging.windows import windows_from_params

SAMPLED, INDEX_QUARANTINE, DICOM_DIR = "data/sampled.csv", "data/index_quarantine.csv", "data/dicom"
PNG_DIR, SPLIT_DIR, QUARANTINE, METRICS = "data/png", "data/split", "data/quarantine.csv", "metrics/preprocess.json"


def main() -> None:
    params_all = load_params()
    params, copy = section(params_all, "preprocess", PreprocessParams), section(params_all, "copy", CopyParams)
    sampled = read_index(SAMPLED)
    output = prepare_output_dir(PNG_DIR)
    items, dicom_dir = sources(sampled["ID"].tolist(), copy.mode, section(params_all, "data", DataParams).dicom_dir, DICOM_DIR)
    shards = ShardSet(output, params.images_per_shard) if params.layout == "shards" else None
    results = process_many(
        items,
        dicom_dir=dicom_dir,
        png_dir=None if shards else output,
        image_size=params.image_size,
        windows=windows_from_params(params.window_dicts()),
        workers=params.workers,
        rsna_pixel_fix=params.rsna_pixel_fix,
        file_timeout_s=params.file_timeout_s,
        manifest=copy.mode == "manifest",
    )
    results = tqdm(results, total=len(sampled), desc="preprocess", unit="img", mininterval=1.0)
    if shards:  # each split's images packed in its own shards, in the order processed (ich.core.images)
        results = store_in_shards(results, shards, dict(zip(sampled["ID"], sampled["split"])))
    outcome = collect_outcome(results, sampled, pd.read_csv(INDEX_QUARANTINE, dtype=str, keep_default_na=False))
    if shards:
        shards.close()
    outcome.write(QUARANTINE, SPLIT_DIR, METRICS)
    failure = quarantine_failure(
        outcome.metrics["quarantined"], len(sampled), outcome.reasons, params.max_quarantine_fraction, QUARANTINE
    )
    if failure:
        raise StageError(failure)
    logging.getLogger("ich").info(
        "preprocess: %s -> %s (%s) in %.1f s", outcome.summary(), output, params.layout, time.perf_counter() - _STARTED
    )


if __name__ == "__main__":
    run_stage(main)
