"""The quarantine limit: above a share of unusable images a stage stops, since the data or folder is wrong."""

from __future__ import annotations

from collections import Counter

__all__ = ["quarantine_failure"]


def quarantine_failure(
    quarantined: int, images: int, reasons: Counter, max_quarantine_fraction: float, quarantine_csv: str, what: str = "sampled images"
) -> str | None:
    """The stage's error message when more than ``max_quarantine_fraction`` of the images are unusable, else None."""
    fraction = quarantined / max(images, 1)
    if fraction <= max_quarantine_fraction:
        return None
    common = "; ".join(f"{count} x {reason}" for reason, count in reasons.most_common(3))
    return (
        f"{quarantined} of {images} {what} ({fraction:.1%}) could not be used, more than "
        f"`preprocess.max_quarantine_fraction` = {max_quarantine_fraction:.1%}. Most common: {common}. "
        f"Check that `data.dicom_dir` is the folder of <ID>.dcm files that `data.labels_csv` describes "
        f"(on RSNA: stage_2_train/ with stage_2_train.csv). Every image and reason is in {quarantine_csv}."
    )
