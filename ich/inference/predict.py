"""Prediction on a scanned folder: whole series, a chunk at a time, rendered in memory
(:mod:`ich.inference.render`) while the model predicts the chunk before. Memory stays flat however many studies
there are; what grows with the data is one table row per image.

The command line around it is :mod:`ich.inference.cli` (``ich predict``); the folder scan
:mod:`ich.inference.scan`; the tables it writes :mod:`ich.inference.outputs`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ich.core.labels import LABELS
from ich.imaging.windows import windows_from_params
from ich.inference.ood import SCORE_COLUMNS, channel_means, score_series
from ich.inference.render import render_chunks
from ich.inference.scan import QUARANTINE_COLUMNS, DicomFile, Scan

if TYPE_CHECKING:
    from ich.inference.loading import LoadedModel

__all__ = ["plan_chunks", "Prediction", "predict_files"]

#: The columns of :attr:`Prediction.slices`.
SLICE_COLUMNS: tuple[str, ...] = (
    "ID",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "position_z",
    "file",
    *LABELS,
    *(f"cnn_{label}" for label in LABELS),
)


def plan_chunks(series: Sequence[str], chunk_images: int) -> list[np.ndarray]:
    """Cut rows (grouped by series, as :func:`ich.inference.scan.scan_folder` orders them) into chunks of whole
    series of about ``chunk_images`` rows: a chunk closes once it holds at least that many; a longer series is one
    chunk."""
    if chunk_images < 1:
        raise ValueError(f"chunk_images must be >= 1. Received: {chunk_images}")
    values = np.asarray(series, dtype=object)
    if len(values) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    chunks, begin = [], 0
    for end in ends:
        if end - begin >= chunk_images:
            chunks.append(np.arange(begin, end))
            begin = end
    if begin < len(values):
        chunks.append(np.arange(begin, len(values)))
    return chunks


@dataclass
class Prediction:
    """What :func:`predict_files` found: ``slices`` (one row per predicted image, scan order: ``ID``, ``PatientID``,
    ``StudyInstanceUID``, ``SeriesInstanceUID``, ``position_z``, ``file``, the labels, ``cnn_<label>``), the
    ``quarantine`` (``ID,reason,file``), whether the model has a sequence model (``sequence``) and, when the model
    has out-of-distribution statistics, one row per series of :func:`ich.inference.ood.score_series` (``ood``)."""

    slices: pd.DataFrame
    quarantine: pd.DataFrame
    sequence: bool
    counts: dict[str, int] = field(default_factory=dict)
    ood: pd.DataFrame | None = None


def predict_files(
    model: LoadedModel,
    scan: Scan,
    *,
    tta: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    chunk_images: int = 256,
    file_timeout_s: float | None = 60.0,
    progress: bool = False,
    on_chunk: Callable[[pd.DataFrame, np.ndarray], None] | None = None,
) -> Prediction:
    """Render and predict every file of ``scan``, whole series at a time (:meth:`LoadedModel.predict_slices`).

    Args:
        workers: rendering processes (0 = one per core).
        chunk_images: images (whole series) rendered and predicted at a time.
        file_timeout_s: a file taking longer to render is quarantined (None: no limit).
        on_chunk: called after each chunk with its predicted rows (the columns of :attr:`Prediction.slices`) and
            their rendered images ``(n, S, S, 3)`` uint8, in the same order (the report keeps what it needs).
    """
    files = scan.files
    chunks = plan_chunks([item.series_uid for item in files], chunk_images)
    frames: list[pd.DataFrame] = []
    scores: list[pd.DataFrame] = []
    quarantine: list[dict[str, str]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="predict", unit="img", mininterval=1.0, file=sys.stderr)
    rendering = render_chunks(
        files,
        chunks,
        image_size=model.image_size,
        windows=windows_from_params(model.card.windows),
        rsna_pixel_fix=model.card.rsna_pixel_fix,
        workers=workers,
        file_timeout_s=file_timeout_s,
    )
    try:
        with contextlib.closing(rendering):  # stops the workers if the model fails
            for chunk in rendering:
                for row, reason in chunk.reasons.items():
                    quarantine.append({"ID": files[row].image_id, "reason": reason, "file": files[row].relative})
                if len(chunk.rendered):
                    frame, ood = _predict_chunk(
                        model, [files[row] for row in chunk.rendered], chunk.images, tta=tta, batch_size=batch_size
                    )
                    frames.append(frame)
                    if ood is not None:
                        scores.append(ood)
                    if on_chunk is not None:
                        on_chunk(frame, chunk.images)
                if bar is not None:
                    bar.update(len(chunk.rows))
    finally:
        if bar is not None:
            bar.close()
    slices = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SLICE_COLUMNS))
    failed = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    counts = {
        "files_found": scan.found,
        "images_predicted": len(slices),
        "series": int(slices["SeriesInstanceUID"].nunique()),
        "quarantined": len(scan.quarantine) + len(failed),
    }
    ood = None
    if model.ood is not None:
        ood = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(columns=list(SCORE_COLUMNS))
    return Prediction(slices, pd.concat([scan.quarantine, failed], ignore_index=True), model.sequence is not None, counts, ood)


def _predict_chunk(
    model: LoadedModel, chosen: list[DicomFile], images: np.ndarray, *, tta: bool, batch_size: int
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The rows of :attr:`Prediction.slices` for the files ``chosen`` (whole series) and their ``images``, and the
    series' out-of-distribution scores (``None`` when the model has no statistics)."""
    series = [item.series_uid for item in chosen]
    positions = [item.position_z for item in chosen]
    ids = [item.image_id for item in chosen]
    predicted = model.predict_slices(images, series, positions, ids, batch_size=batch_size, tta=tta)
    frame = pd.DataFrame(
        {
            "ID": ids,
            "PatientID": [item.patient_id for item in chosen],
            "StudyInstanceUID": [item.study_uid for item in chosen],
            "SeriesInstanceUID": series,
            "position_z": positions,
            "file": [item.relative for item in chosen],
        }
    )
    for index, label in enumerate(LABELS):
        frame[label] = predicted.final[:, index]
    for index, label in enumerate(LABELS):
        frame[f"cnn_{label}"] = predicted.cnn[:, index]
    ood = None
    if model.ood is not None and predicted.features is not None:
        # With --tta the features are the mean over the image and its mirror; the statistics were fitted without.
        ood = score_series(model.ood, predicted.features, channel_means(images), series)
    return frame, ood
