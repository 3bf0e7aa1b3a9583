"""Stage `copy`: materialise the sampled DICOMs from `data.dicom_dir` into data/dicom/ (hardlink or copy), or with
`copy.mode: manifest` record their sizes and SHA-256 in data/dicom/manifest.csv (one file for DVC, not one per image)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ich.core.files import prepare_output_dir, write_csv, write_json
from ich.core.params import CopyParams, DataParams, load_params, section
from ich.core.runner import StageError, run_stage
from ich.data.copy import MANIFEST, link_or_copy_many, manifest_of

SAMPLED = "data/sampled.csv"
OUTPUT_DIR = "data/dicom"
METRICS = "metrics/copy.json"

logger = logging.getLogger("ich")


def main() -> None:
    params = load_params()
    data = section(params, "data", DataParams)
    copy = section(params, "copy", CopyParams)
    if not Path(data.dicom_dir).is_dir():
        raise StageError(
            f"`data.dicom_dir` is not a folder: {data.dicom_dir!r}. Point it at the folder of <ID>.dcm files "
            "(on RSNA: stage_2_train/)."
        )
    ids = pd.read_csv(SAMPLED, usecols=["ID"], dtype=str)["ID"].tolist()
    output = prepare_output_dir(OUTPUT_DIR)
    if copy.mode == "manifest":  # one file for DVC instead of one per image (docs/scaling.md)
        manifest, missing = manifest_of(ids, data.dicom_dir, workers=copy.workers, progress=True)
        write_csv(manifest, output / MANIFEST)
        counts = {"images": len(ids), "in_manifest": len(manifest), "bytes": int(manifest["size"].sum()), "missing": len(missing)}
    else:
        result = link_or_copy_many(ids, data.dicom_dir, output, workers=copy.workers, progress=True)
        missing = result.missing
        counts = {"images": len(ids), "linked": len(result.linked), "copied": len(result.copied), "missing": len(missing)}
    write_json(counts, METRICS)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        logger.warning(
            "copy: %d sampled files are missing from %s (%s); preprocess quarantines them",
            len(missing),
            data.dicom_dir,
            shown,
        )
    logger.info("copy: %s -> %s", ", ".join(f"{count} {name}" for name, count in counts.items()), output)


if __name__ == "__main__":
    run_stage(main)
