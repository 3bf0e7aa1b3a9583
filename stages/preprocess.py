"""Stage `preprocess`: DICOM -> HU -> 3 windows -> RGB PNG at `preprocess.image_size` (one file per image, or packed
in shards: `preprocess.layout`); the per-split tables of the processed images; every unusable image in the quarantine
list."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the imports below, so the logged time includes them

import logging

import pandas as pd
from tqdm import tqdm

from ich.core.files import prepare_output_dir, write_csv, write_json
from ich.core.images import ShardSet
from ich.core.params import CopyParams, DataParams, PreprocessParams, load_params, section
from ich.core.quarantine import quarantine_failure
from ich.core.runner import StageError, run_stage
from ich.data.copy import MANIFEST
from ich.data.preprocess import collect_outcome, process_many, read_manifest, store_in_shards
from ich.data.tables import read_index
from ich.imaging.windows import windows_from_params

SAMPLED, INDEX_QUARANTINE, DICOM_DIR = "data/sampled.csv", "data/index_quarantine.csv", "data/dicom"
PNG_DIR, SPLIT_DIR, QUARANTINE, METRICS = "data/png", "data/split", "data/quarantine.csv", "metrics/preprocess.json"


def main() -> None:
    all_params = load_params()
    params, copy = section(all_params, "preprocess", PreprocessParams), section(all_params, "copy", CopyParams)
    sampled = read_index(SAMPLED)
    output = prepare_output_dir(PNG_DIR)
    items: list = sampled["ID"].tolist()
    dicom_dir = DICOM_DIR
    if copy.mode == "manifest":  # the sources themselves, each checked against the hash the copy stage recorded
        dicom_dir = section(all_params, "data", DataParams).dicom_dir
        digests = read_manifest(f"{DICOM_DIR}/{MANIFEST}")
        items = [(image_id, digests.get(image_id)) for image_id in items]
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
    progress = tqdm(results, total=len(sampled), desc="preprocess", unit="img", mininterval=1.0)
    if shards:  # each split's images packed in its own shards, in the order processed (ich.core.images)
        progress = store_in_shards(progress, shards, dict(zip(sampled["ID"], sampled["split"])))
    outcome = collect_outcome(progress, sampled, pd.read_csv(INDEX_QUARANTINE, dtype=str, keep_default_na=False))
    if shards:
        shards.close()
    write_csv(outcome.quarantine, QUARANTINE)
    for name, table in outcome.tables.items():
        write_csv(table, f"{SPLIT_DIR}/{name}.csv")
    write_json(outcome.metrics, METRICS)
    failure = quarantine_failure(
        outcome.metrics["quarantined"], len(sampled), outcome.reasons, params.max_quarantine_fraction, QUARANTINE
    )
    if failure:
        raise StageError(failure)
    logging.getLogger("ich").info(
        "preprocess: %d PNGs -> %s (%s), %d quarantined (%s) in %.1f s",
        outcome.metrics["png_written"],
        output,
        params.layout,
        outcome.metrics["quarantined"],
        ", ".join(f"{count} {reason}" for reason, count in outcome.reasons.most_common(3)) or "none",
        time.perf_counter() - _STARTED,
    )


if __name__ == "__main__":
    run_stage(main)
