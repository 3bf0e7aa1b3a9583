"""The copy stage's computation: the selected DICOMs materialised into ``data/dicom/`` (hardlinks when possible), or
recorded there as a manifest of their sizes and hashes."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ich.core.ids import image_path

__all__ = ["LinkResult", "link_or_copy_many", "MANIFEST", "manifest_of"]


@dataclass(frozen=True)
class LinkResult:
    """Outcome of :func:`link_or_copy_many`: IDs linked, copied, and missing at the source."""

    linked: list[str]
    copied: list[str]
    missing: list[str]


def link_or_copy_many(
    image_ids: Iterable[str],
    source_dir: str | os.PathLike,
    target_dir: str | os.PathLike,
    suffix: str = ".dcm",
    workers: int = 8,
    progress: bool = False,
) -> LinkResult:
    """Materialise ``source_dir/<ID><suffix>`` into ``target_dir``: hardlink if possible, else copy.

    A hardlink costs no space and no time; it needs the same filesystem. When linking fails (another
    filesystem, or a filesystem without hardlinks) the file is copied by a pool of threads, which
    overlaps the I/O of many files. Missing source files are returned, not raised.
    """
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    ids = list(image_ids)

    def materialise(image_id: str) -> str:
        source = image_path(source_dir, image_id, suffix)
        target = image_path(target_dir, image_id, suffix)
        try:
            os.link(source, target)
            return "linked"
        except FileNotFoundError:
            return "missing"
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            return "missing"
        return "copied"

    outcome: dict[str, list[str]] = {"linked": [], "copied": [], "missing": []}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(materialise, ids)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(ids), desc="copy", unit="file", mininterval=1.0)
        for image_id, status in zip(ids, results):
            outcome[status].append(image_id)
    return LinkResult(**outcome)


#: The copy stage's output in ``copy.mode: manifest``: ``data/dicom/manifest.csv``.
MANIFEST = "manifest.csv"


def _digest(path: Path) -> tuple[int, str] | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            size = 0
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except FileNotFoundError:
        return None
    return size, digest.hexdigest()


def manifest_of(
    image_ids: Iterable[str], source_dir: str | os.PathLike, suffix: str = ".dcm", workers: int = 8, progress: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """The size and SHA-256 of each ``source_dir/<ID><suffix>`` (``ID, size, sha256``, in the given order), and the
    IDs whose file is missing. Instead of one link per file in DVC's cache, the copy stage can record this one table:
    DVC then tracks a single file, and preprocess reads the sources and checks each against its hash.

    Files are hashed by a pool of threads (hashlib releases the GIL on large buffers)."""
    ids = list(image_ids)
    source_dir = Path(source_dir)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results: Iterable = pool.map(lambda image_id: _digest(image_path(source_dir, image_id, suffix)), ids)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(ids), desc="manifest", unit="file", mininterval=1.0)
        rows, missing = [], []
        for image_id, result in zip(ids, results):
            if result is None:
                missing.append(image_id)
            else:
                rows.append((image_id, *result))
    return pd.DataFrame(rows, columns=["ID", "size", "sha256"]), missing
