"""DICOM -> HU -> three windows -> square RGB PNG, in parallel, streaming, with quarantine."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from ich.core.files import write_csv, write_file, write_json
from ich.core.ids import image_path
from ich.core.images import ShardSet
from ich.core.labels import LABELS
from ich.core.pool import TaskFailure, map_chunks_in_order, resolve_workers
from ich.core.quarantine import FILE_MISSING, INVALID_ID
from ich.data.copy import MANIFEST
from ich.imaging.dicom import RSNA_PIXEL_FIX_MODES
from ich.imaging.png import encode_png
from ich.imaging.slices import render_file, reuse_freed_memory, step_failed
from ich.imaging.windows import DEFAULT_WINDOWS, Window

__all__ = [
    "FileResult",
    "process_file",
    "process_many",
    "SPLIT_COLUMNS",
    "PreprocessOutcome",
    "collect_outcome",
    "store_in_shards",
    "sources",
    "read_manifest",
]

# Speed levers, measured by benchmarks/preprocess.py and benchmarks/preprocess_stage.py: one LUT gather
# instead of three float passes (ich.imaging.rendering); OpenCV's area resize; the PNG writer of ich.imaging.png (numpy "Up"
# filter, ISA-L deflate); one worker process per core; glibc keeping freed memory (ich.imaging.slices.reuse_freed_memory);
# files sent to the workers _CHUNK_SIZE a task: one task per file cost the parent ~0.37 ms of pebble bookkeeping
# and the workers ~0.3 ms per file, as much as the rendering itself (benchmarks/rsna_size.py).
_CHUNK_SIZE = 16


@dataclass(frozen=True)
class FileResult:
    """Outcome for one ID: ``metadata`` when a PNG was made, else ``reason`` for the quarantine. ``png`` holds the
    PNG's bytes when the caller writes them (shards), None when the PNG was written to ``png_dir``."""

    image_id: str
    metadata: dict[str, object] | None
    reason: str | None
    png: bytes | None = None


@dataclass(frozen=True)
class _Job:
    dicom_dir: str
    png_dir: str | None  # None: return the PNG bytes
    image_size: int
    windows: tuple[Window, ...]
    rsna_pixel_fix: str = "auto"
    manifest: bool = False  # items are (ID, SHA-256 recorded by the copy stage or None when it found no file)


#: An item of :func:`process_many`: an ID, or with a manifest ``(ID, SHA-256 or None)``.
Item = str | tuple[str, str | None]


def process_file(item: Item, job: _Job) -> FileResult:
    """Turn ``<dicom_dir>/<ID>.dcm`` into ``<png_dir>/<ID>.png`` (or its bytes); every failure of the file becomes a
    reason.

    Reading, decoding and windowing are :func:`ich.imaging.slices.render_file`, the boundary between one
    untrusted file and the run that ``ich predict`` shares; encoding turns any exception into a reason too. Only
    writing the PNG may raise (a full disk or a read-only output is no property of the file). With a manifest, a
    file whose bytes are not those the copy stage recorded is quarantined (:data:`ich.core.quarantine.SOURCE_CHANGED`).
    """
    image_id, digest = item if isinstance(item, tuple) else (item, None)
    try:
        source = image_path(job.dicom_dir, image_id, ".dcm")
        target = image_path(job.png_dir, image_id, ".png") if job.png_dir is not None else None
    except ValueError:
        return FileResult(image_id, None, INVALID_ID)
    if job.manifest and digest is None:
        return FileResult(image_id, None, FILE_MISSING)
    rendered = render_file(
        source, image_id, image_size=job.image_size, windows=job.windows, rsna_pixel_fix=job.rsna_pixel_fix, sha256=digest
    )
    if isinstance(rendered, str):
        return FileResult(image_id, None, rendered)
    try:
        png = encode_png(rendered.rgb)
    except Exception as error:
        return FileResult(image_id, None, step_failed("PNG encoding", error))
    if target is None:
        return FileResult(image_id, rendered.metadata, None, png)
    write_file(target, png)
    return FileResult(image_id, rendered.metadata, None)


def process_many(
    image_ids: Iterable[Item],
    dicom_dir: str | os.PathLike,
    png_dir: str | os.PathLike | None,
    image_size: int,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    workers: int = 0,
    rsna_pixel_fix: str = "auto",
    file_timeout_s: float | None = None,
    manifest: bool = False,
) -> Iterator[FileResult]:
    """Process IDs across ``workers`` processes (0 = all cores), yielding one result per ID in input order.

    ``png_dir`` None: each result carries its PNG's bytes for the caller to store (the shards layout).
    ``manifest``: items are ``(ID, SHA-256)`` from the copy stage's manifest (None: the copy stage found no file).

    With ``file_timeout_s`` every file is processed in a worker process, so a decoder that hangs or
    crashes costs that file (quarantined with the reason), never the run: files go to the workers in chunks,
    and a chunk that hangs or crashes is run again one file a task (:func:`ich.core.pool.map_chunks_in_order`). Without it, one worker (or
    fewer files than two per worker) runs in this process. Results stream back as they are ready, so
    memory stays flat however many files there are.
    """
    if rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
        raise ValueError(f"rsna_pixel_fix must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. Received: {rsna_pixel_fix!r}")
    if file_timeout_s is not None and not file_timeout_s > 0:
        raise ValueError(f"file_timeout_s must be > 0 seconds (or None for no limit). Received: {file_timeout_s}")
    job = _Job(
        str(dicom_dir), None if png_dir is None else str(png_dir), int(image_size), tuple(windows), rsna_pixel_fix, manifest
    )
    if png_dir is not None:
        Path(png_dir).mkdir(parents=True, exist_ok=True)
    workers = resolve_workers(workers)
    ids = list(image_ids)
    in_process = file_timeout_s is None and (workers == 1 or len(ids) < 2 * workers)
    results = map_chunks_in_order(
        partial(process_file, job=job),
        ids,
        chunk_size=_CHUNK_SIZE,
        workers=workers,
        timeout_s=file_timeout_s,
        window=4 * workers,
        initializer=reuse_freed_memory,
        in_process=in_process,
    )
    for result in results:
        if isinstance(result, TaskFailure):
            item = result.item
            yield FileResult(item[0] if isinstance(item, tuple) else item, None, result.reason)
        else:
            yield result


def store_in_shards(results: Iterable[FileResult], shards: ShardSet, split_of: Mapping[str, str]) -> Iterator[FileResult]:
    """Pass ``results`` on, after adding each made PNG to ``shards`` under its split's prefix (``train-00000.tar``...)."""
    for result in results:
        if result.png is not None:
            shards.add(split_of[result.image_id], result.image_id, result.png)
            result = FileResult(result.image_id, result.metadata, None)
        yield result


def sources(image_ids: Sequence[str], copy_mode: str, dicom_dir: str, copied_dir: str) -> tuple[list[Item], str]:
    """What to read, and from which folder: with ``copy.mode: link`` the IDs, from the copy stage's folder of links
    (``copied_dir``); with ``manifest``, ``(ID, SHA-256)`` pairs from the sources in ``dicom_dir`` themselves, each
    checked against the hash the copy stage recorded in ``copied_dir``'s manifest (None: it found no file)."""
    if copy_mode != "manifest":
        return list(image_ids), copied_dir
    digests = read_manifest(f"{copied_dir}/{MANIFEST}")
    return [(image_id, digests.get(image_id)) for image_id in image_ids], dicom_dir


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    """``{ID: SHA-256}`` of the copy stage's manifest (:func:`ich.data.copy.manifest_of`)."""
    manifest = pd.read_csv(path, dtype={"ID": str, "sha256": str})
    return dict(zip(manifest["ID"], manifest["sha256"]))


#: Columns of the per-split tables ``data/split/{train,val,test}.csv`` (the contract's, plus where each slice lies).
SPLIT_COLUMNS: tuple[str, ...] = ("ID", *LABELS, "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "position_z")


@dataclass(frozen=True)
class PreprocessOutcome:
    """What the preprocess stage writes: ``tables`` (per split, the processed images in
    :data:`SPLIT_COLUMNS`, sorted by ID), ``quarantine`` (``ID,reason``: the index stage's entries, then
    this stage's unusable files), the ``metrics`` summary, and ``reasons`` (count per reason of this
    stage's unusable files)."""

    tables: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    metrics: dict[str, object]
    reasons: Counter

    def write(self, quarantine_csv: str | os.PathLike, split_dir: str | os.PathLike, metrics_json: str | os.PathLike) -> None:
        """Write the quarantine list, the per-split tables (``<split_dir>/<split>.csv``) and the metrics."""
        write_csv(self.quarantine, quarantine_csv)
        for name, table in self.tables.items():
            write_csv(table, Path(split_dir) / f"{name}.csv")
        write_json(self.metrics, metrics_json)

    def summary(self) -> str:
        """One line: images made, images quarantined and the commonest reasons."""
        reasons = ", ".join(f"{count} {reason}" for reason, count in self.reasons.most_common(3)) or "none"
        return f"{self.metrics['png_written']} PNGs, {self.metrics['quarantined']} quarantined ({reasons})"


def collect_outcome(results: Iterable[FileResult], sampled: pd.DataFrame, earlier: pd.DataFrame) -> PreprocessOutcome:
    """Gather the per-file results into the stage's tables.

    Args:
        results: one :class:`FileResult` per row of ``sampled``.
        sampled: the sample stage's table (``ID``, labels, patient/study/series, ``position_z``, ``split``).
        earlier: the quarantine so far (``ID,reason``; the index stage's label and file problems).
    """
    quarantine = [{"ID": result.image_id, "reason": str(result.reason)} for result in results if result.metadata is None]
    unusable = {entry["ID"] for entry in quarantine}
    processed = sampled[~sampled["ID"].isin(unusable)].sort_values("ID")
    tables = {name: processed[processed["split"] == name][list(SPLIT_COLUMNS)] for name in ("train", "val", "test")}
    reasons = Counter(entry["reason"] for entry in quarantine)
    fraction = len(quarantine) / max(len(sampled), 1)
    metrics = {
        "images": int(len(sampled)),
        "png_written": int(len(processed)),
        "quarantined": len(quarantine),
        "quarantined_fraction": round(fraction, 6),
        "quarantined_before": int(len(earlier)),
        "top_reasons": dict(reasons.most_common(10)),
        **{name: int(len(table)) for name, table in tables.items()},
    }
    return PreprocessOutcome(
        tables=tables,
        quarantine=pd.concat([earlier[["ID", "reason"]], pd.DataFrame(quarantine, columns=["ID", "reason"])], ignore_index=True),
        metrics=metrics,
        reasons=reasons,
    )
