"""Predicting over a split table of processed images (PNG files or shards), whole series at a time, with flat memory.

- :func:`series_chunks` cuts a table into chunks of whole series (at most about ``chunk_images`` images each,
  a longer series whole), so 2.5D neighbours and the sequence model always see complete series;
- :func:`predict_frame` runs :meth:`ich.inference.loading.LoadedModel.predict_slices` chunk by chunk (the evaluate stage);
- :class:`FeatureStore` keeps the CNN's pooled features and probabilities of a split, and the mean of each window of
  its images (:func:`ich.inference.ood.channel_means`), in ``.npy`` files written chunk by chunk (memory-mapped:
  memory does not grow with the number of series) and resumes after a kill when the model and the images are the
  same (the sequence stage).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ich.core.files import atomic_write_text
from ich.core.images import WHOLE_FILE, OpenFiles, decode_png
from ich.data.context import series_order, series_runs
from ich.inference.loading import LoadedModel, SlicePredictions
from ich.inference.ood import channel_means

__all__ = ["load_pngs", "series_chunks", "predict_frame", "FeatureStore", "fingerprint_files"]


def load_pngs(locations: pd.DataFrame | list[str], image_size: int) -> np.ndarray:
    """The RGB images at ``locations`` (PNG paths, or a table with a ``path`` column and, for shards, ``offset`` and
    ``size``: :class:`ich.core.images.ImageStore`) as uint8 ``(N, image_size, image_size, 3)``.

    Raises:
        ValueError: an image that cannot be read or has another size (preprocess at the model's image size).
    """
    if not isinstance(locations, pd.DataFrame):
        locations = pd.DataFrame({"path": [str(path) for path in locations]})
    if "offset" not in locations or "size" not in locations:  # a table of PNG paths alone: whole files
        locations = locations.assign(offset=0, size=WHOLE_FILE)
    images = np.empty((len(locations), image_size, image_size, 3), dtype=np.uint8)
    with OpenFiles() as files:
        for index, (path, offset, size) in enumerate(locations[["path", "offset", "size"]].itertuples(index=False)):
            what = str(path) if size == WHOLE_FILE else f"at byte {offset} of {path}"
            try:
                image = decode_png(files.read(str(path), int(offset), int(size)), what)
            except OSError as error:
                raise ValueError(f"Cannot read the image {what}: {error}") from error
            if image.shape[:2] != (image_size, image_size):
                raise ValueError(
                    f"{what} is {image.shape[1]}x{image.shape[0]} px; the model reads {image_size} px (rerun preprocess)"
                )
            images[index] = image
    return images


def series_chunks(frame: pd.DataFrame, chunk_images: int) -> Iterator[np.ndarray]:
    """Row positions of ``frame`` (columns ``SeriesInstanceUID``, ``position_z``, ``ID``) in chunks of whole
    series, each in z order, about ``chunk_images`` rows per chunk (a longer series is one chunk)."""
    series = frame["SeriesInstanceUID"].astype(str).to_numpy()
    runs = series_runs(series, series_order(series, frame["position_z"].to_numpy(), frame["ID"].astype(str).to_numpy()))
    chunk: list[np.ndarray] = []
    size = 0
    for run in runs:
        if chunk and size + len(run) > chunk_images:
            yield np.concatenate(chunk)
            chunk, size = [], 0
        chunk.append(run)
        size += len(run)
    if chunk:
        yield np.concatenate(chunk)


def _chunk_arrays(
    model: LoadedModel, frame: pd.DataFrame, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    part = frame.iloc[rows]
    return (
        load_pngs(part, model.image_size),
        part["SeriesInstanceUID"].astype(str).to_numpy(),
        part["position_z"].to_numpy(dtype=np.float64),
        part["ID"].astype(str).to_numpy(),
    )


def predict_frame(model: LoadedModel, frame: pd.DataFrame, batch_size: int = 64, chunk_images: int = 2048) -> SlicePredictions:
    """:meth:`LoadedModel.predict_slices` over every row of a split table (with a ``path`` column), whole
    series at a time; rows of the result in ``frame``'s order."""
    cnn = np.full((len(frame), 6), np.nan)
    final = np.full((len(frame), 6), np.nan)
    for rows in series_chunks(frame, chunk_images):
        predicted = model.predict_slices(*_chunk_arrays(model, frame, rows), batch_size=batch_size)
        cnn[rows], final[rows] = predicted.cnn, predicted.final
    return SlicePredictions(cnn=cnn, final=final)


def fingerprint_files(paths: list[str | os.PathLike], extra: str = "") -> str:
    """SHA-256 over the names and contents of ``paths`` in the given order (each file once: the images of a shard
    share it), and ``extra``."""
    digest = hashlib.sha256(extra.encode())
    for path in dict.fromkeys(str(path) for path in paths):
        digest.update(str(path).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class FeatureStore:
    """The CNN's features and probabilities of one split, in ``folder/<name>.features.npy`` and
    ``<name>.probabilities.npy``, and its images' window means in ``<name>.channels.npy``, filled chunk by chunk;
    ``<name>.json`` records the fingerprint and the chunks done, so a killed run resumes where it stopped and a
    changed model or image set starts over."""

    def __init__(self, folder: str | os.PathLike, name: str):
        self.folder = Path(folder)
        self.name = name
        self.state_path = self.folder / f"{name}.json"

    def _paths(self) -> tuple[Path, Path, Path]:
        return tuple(self.folder / f"{self.name}.{kind}.npy" for kind in ("features", "probabilities", "channels"))  # type: ignore[return-value]

    def channel_means(self) -> np.ndarray:
        """``(N, 3)`` float64 mean of each window of every row's image, in [0, 1] (memory-mapped; after :meth:`compute`).

        Raises:
            FileNotFoundError: :meth:`compute` has not filled the store.
        """
        return np.asarray(np.load(self._paths()[2], mmap_mode="r"))

    def compute(
        self, model: LoadedModel, frame: pd.DataFrame, fingerprint: str, batch_size: int = 64, chunk_images: int = 1024
    ) -> tuple[np.ndarray, np.ndarray, dict[str, float | None]]:
        """Features ``(N, F)`` float32 and probabilities ``(N, 6)`` float64 of every row of ``frame`` (rows in its
        order, memory-mapped from disk) and ``{"images": computed now, "seconds": ..., "images_per_s": ...}``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = self._paths()
        features_path, probabilities_path, channels_path = paths
        chunks = list(series_chunks(frame, chunk_images))
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        fresh = state.get("fingerprint") != fingerprint or not all(path.is_file() for path in paths)
        done = set() if fresh else set(state.get("chunks_done", []))
        features = probabilities = channels = None
        if not fresh:
            features = np.load(features_path, mmap_mode="r+")
            probabilities = np.load(probabilities_path, mmap_mode="r+")
            channels = np.load(channels_path, mmap_mode="r+")
        computed, started = 0, time.perf_counter()
        for index, rows in enumerate(chunks):
            if index in done:
                continue
            images, series, positions, ids = _chunk_arrays(model, frame, rows)
            cnn, pooled = model.cnn_outputs(images, series, positions, ids, batch_size, with_features=True)
            assert pooled is not None  # with_features=True
            if features is None:
                features = np.lib.format.open_memmap(
                    features_path, mode="w+", dtype=np.float32, shape=(len(frame), pooled.shape[1])
                )
                probabilities = np.lib.format.open_memmap(probabilities_path, mode="w+", dtype=np.float64, shape=(len(frame), 6))
                channels = np.lib.format.open_memmap(channels_path, mode="w+", dtype=np.float64, shape=(len(frame), 3))
            assert probabilities is not None and channels is not None  # opened together with features
            features[rows], probabilities[rows], channels[rows] = pooled, cnn, channel_means(images)
            for array in (features, probabilities, channels):
                array.flush()
            done.add(index)
            computed += len(rows)
            atomic_write_text(self.state_path, json.dumps({"fingerprint": fingerprint, "chunks_done": sorted(done)}))
        seconds = time.perf_counter() - started
        if features is None:  # an empty table
            return np.zeros((0, 0), np.float32), np.zeros((0, 6)), {"images": 0, "seconds": 0.0, "images_per_s": None}
        rate = computed / seconds if computed and seconds > 0 else None
        return (
            np.asarray(features),
            np.asarray(probabilities),
            {"images": computed, "seconds": round(seconds, 3), "images_per_s": rate},
        )
