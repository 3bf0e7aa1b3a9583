"""Stage `preprocess`: DICOM -> HU -> 3 windows -> RGB PNG at `preprocess.image_size`, plus metadata and quarantine."""

from __future__ import annotations

import logging
import os
from collections import Counter

import pandas as pd
from tqdm import tqdm

from ich.runner import StageError, run_stage
from ich.dicom import METADATA_COLUMNS, MIN_KEY_LENGTH, PSEUDONYM_KEY_ENV, PSEUDONYMIZED_COLUMNS, pseudonym
from ich.files import prepare_output_dir, write_csv, write_json
from ich.params import PreprocessParams, load_params, section
from ich.preprocess import process_many
from ich.windows import windows_from_params

SAMPLED = "data/sampled.csv"
REJECTS = "data/sample_rejects.csv"
DICOM_DIR = "data/dicom"
PNG_DIR = "data/png"
METADATA = "data/metadata.csv"
QUARANTINE = "data/quarantine.csv"
METRICS = "metrics/preprocess.json"

logger = logging.getLogger("ich")


def pseudonym_key(params: PreprocessParams) -> bytes | None:
    """The secret key for ``preprocess.pseudonymize_ids`` from the environment, or None when it is off."""
    if not params.pseudonymize_ids:
        return None
    key = os.environ.get(PSEUDONYM_KEY_ENV, "")
    if len(key) < MIN_KEY_LENGTH:
        raise StageError(
            f"`preprocess.pseudonymize_ids` is on, so the environment variable {PSEUDONYM_KEY_ENV} must hold a "
            f"secret of at least {MIN_KEY_LENGTH} characters (e.g. `export {PSEUDONYM_KEY_ENV}=$(openssl rand "
            f"-hex 32)`). Keep it outside the repository; the same key gives the same pseudonyms."
        )
    return key.encode("utf-8")


def main() -> None:
    params = section(load_params(), "preprocess", PreprocessParams)
    key = pseudonym_key(params)
    windows = windows_from_params(params.window_dicts())
    ids = pd.read_csv(SAMPLED, usecols=["ID"], dtype=str)["ID"].tolist()
    output = prepare_output_dir(PNG_DIR)
    metadata: list[dict[str, object]] = []
    quarantine: list[dict[str, str]] = []
    results = process_many(ids, DICOM_DIR, output, params.image_size, windows, params.workers)
    for result in tqdm(results, total=len(ids), desc="preprocess", unit="img", mininterval=1.0):
        if result.metadata is not None:
            row = dict(result.metadata)
            if key is not None:
                row.update({column: pseudonym(str(row[column]), key) for column in PSEUDONYMIZED_COLUMNS})
            metadata.append(row)
        else:
            quarantine.append({"ID": result.image_id, "reason": str(result.reason)})

    # Rows the sample stage rejected (bad IDs, conflicting labels) are unusable images too.
    label_problems = pd.read_csv(REJECTS, dtype=str, keep_default_na=False)
    label_problems = label_problems.assign(reason="labels: " + label_problems["reason"]).drop_duplicates("ID")
    quarantine_frame = pd.concat([pd.DataFrame(quarantine, columns=["ID", "reason"]), label_problems])
    write_csv(quarantine_frame, QUARANTINE)
    write_csv(pd.DataFrame(metadata, columns=list(METADATA_COLUMNS)), METADATA)

    reasons = Counter(entry["reason"] for entry in quarantine)
    fraction = len(quarantine) / max(len(ids), 1)
    write_json(
        {
            "images": len(ids),
            "png_written": len(metadata),
            "quarantined": len(quarantine),
            "quarantined_fraction": round(fraction, 6),
            "label_problems": len(label_problems),
            "top_reasons": dict(reasons.most_common(10)),
        },
        METRICS,
    )
    if fraction > params.max_quarantine_fraction:
        common = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
        raise StageError(
            f"{len(quarantine)} of {len(ids)} sampled images ({fraction:.1%}) could not be used, more than "
            f"`preprocess.max_quarantine_fraction` = {params.max_quarantine_fraction:.1%}. Most common: {common}. "
            f"Check that `data.dicom_dir` is the folder of <ID>.dcm files that `data.labels_csv` describes "
            f"(on RSNA: stage_2_train/ with stage_2_train.csv). Every image and reason is in {QUARANTINE}."
        )
    logger.info(
        "preprocess: %d PNGs -> %s, %d quarantined (%s)", len(metadata), output, len(quarantine),
        ", ".join(f"{count} {reason}" for reason, count in reasons.most_common(3)) or "none",
    )


if __name__ == "__main__":
    run_stage(main)
