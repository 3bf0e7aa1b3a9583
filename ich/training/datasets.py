"""tf.data input pipelines over the processed images (PNG files or shards): parallel read and decode, a cache when it
fits the memory budget, seeded shuffle, batch, prefetch."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd
import tensorflow as tf

from ich.core.images import LOCATION_COLUMNS, WHOLE_FILE, OpenFiles

__all__ = ["Locations", "make_dataset", "cached_bytes", "plan_cache"]


Locations: TypeAlias = Sequence[str] | pd.DataFrame
"""Where images lie: a list of whole files (PNG paths), or a frame of ``path, offset, size`` rows
(:meth:`ich.core.images.ImageStore.locate`; ``size`` -1 is the whole file)."""


def _decode_bytes(data: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.io.decode_png(data, channels=3)
    image = tf.ensure_shape(image, (None, None, 3))
    if image_size:
        image = tf.image.resize(image, (image_size, image_size), method="area")
        image = tf.cast(tf.round(image), tf.uint8)
    return image


def _decode(path: tf.Tensor, image_size: int) -> tf.Tensor:
    return _decode_bytes(tf.io.read_file(path), image_size)


def _compose(image: tf.Tensor, before: tf.Tensor, after: tf.Tensor) -> tf.Tensor:
    """:func:`ich.data.context.compose_context` in TensorFlow: red from the image, green from ``before``, blue from ``after``."""
    return tf.concat([image[..., 0:1], before[..., 1:2], after[..., 2:3]], axis=-1)


def _as_locations(locations: Locations) -> pd.DataFrame:
    if isinstance(locations, pd.DataFrame):
        return locations[list(LOCATION_COLUMNS)].reset_index(drop=True)
    paths = [str(path) for path in locations]
    return pd.DataFrame({"path": paths, "offset": np.zeros(len(paths), np.int64), "size": np.full(len(paths), WHOLE_FILE)})


_BLOCK_ROWS = 64  # rows read per generator step: from_generator's per-element cost, once per block


def _ranges_dataset(sources: list[pd.DataFrame], shuffle: bool, seed: int) -> tf.data.Dataset:
    """``((bytes, ...), row)`` for every row of ``sources`` (one frame of locations per image of a row: the image,
    and for 2.5D its neighbours), read by offset from their files; in row order, or with ``shuffle`` in a new
    seeded order every epoch (the same orders every run). Only the row numbers are shuffled: memory holds one
    block of images per element in flight, however many rows there are. Rows are read :data:`_BLOCK_ROWS` at a time
    and then unbatched: with one range a step the RSNA-size shards streamed 1,227 training and 919 validation images/s
    on 2 cores, with 64 a step 1,672 and 1,838 (benchmarks/rsna_size.py)."""
    columns = [
        (frame["path"].tolist(), frame["offset"].to_numpy(np.int64), frame["size"].to_numpy(np.int64)) for frame in sources
    ]
    rows = len(sources[0])
    epochs = itertools.count()

    def generate():
        order = np.random.default_rng((seed, next(epochs))).permutation(rows) if shuffle else np.arange(rows)
        with OpenFiles() as files:
            for start in range(0, rows, _BLOCK_ROWS):
                block = order[start : start + _BLOCK_ROWS]
                yield (
                    tuple(
                        np.array([files.read(paths[row], int(offsets[row]), int(sizes[row])) for row in block], dtype=object)
                        for paths, offsets, sizes in columns
                    ),
                    block.astype(np.int64),
                )

    spec = (tuple(tf.TensorSpec((None,), tf.string) for _ in sources), tf.TensorSpec((None,), tf.int64))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec).unbatch()
    # The known length: a learning-rate schedule counts steps by it (unknown, a generator's would be -2).
    return dataset.apply(tf.data.experimental.assert_cardinality(rows))


def make_dataset(
    paths: Locations,
    labels: np.ndarray,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    cache: bool = True,
    neighbours: tuple[Locations, Locations] | None = None,
) -> tf.data.Dataset:
    """Images as float32 ``(batch, H, W, 3)`` in ``[0, 1]`` with float32 ``(batch, labels)`` targets.

    ``paths``: the images (see :data:`Locations`: PNG files, or ranges of shards). ``neighbours``: for 2.5D input,
    the locations of each image's neighbour before and after it along z; the image then takes its green channel from
    the first and its blue channel from the second (:mod:`ich.data.context`).

    Memory: with ``cache``, the decoded uint8 images are kept in memory (H x W x 3 bytes each; the caller decides
    what fits, see ``train.cache_images``) and shuffled there by ``seed`` (a new order every epoch, the same orders
    every run). Without it, only the order of the files or ranges is shuffled, before reading, so memory holds the
    images in flight and the prefetched batches, whatever the number of images. Images are read and decoded in
    parallel, scaled, batched and prefetched.
    """
    labels = np.asarray(labels, dtype=np.float32)
    sources = [_as_locations(paths)] + ([_as_locations(side) for side in neighbours] if neighbours is not None else [])
    if any(len(source) != len(labels) for source in sources):
        raise ValueError(f"{len(labels)} label rows but {'/'.join(str(len(source)) for source in sources)} image locations")
    whole_files = all((source["size"] == WHOLE_FILE).all() for source in sources)
    shuffle_names = shuffle and not cache  # a bounded pipeline: shuffle what to read, not what was read

    def image_of(*encoded: tf.Tensor) -> tf.Tensor:
        decoded = [_decode_bytes(data, image_size) for data in encoded]
        return decoded[0] if len(decoded) == 1 else _compose(*decoded)

    if whole_files:
        names = tuple(source["path"].tolist() for source in sources)
        dataset = tf.data.Dataset.from_tensor_slices((names if neighbours is not None else names[0], labels))
        if shuffle_names:
            dataset = dataset.shuffle(max(len(labels), 1), seed=seed, reshuffle_each_iteration=True)
        if neighbours is None:
            dataset = dataset.map(
                lambda path, target: (_decode(path, image_size), target), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
            )
        else:
            dataset = dataset.map(
                lambda triple, target: (_compose(*(_decode(path, image_size) for path in triple)), target),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
    else:
        targets = tf.constant(labels)
        dataset = _ranges_dataset(sources, shuffle_names, seed).map(
            lambda encoded, row: (image_of(*encoded), tf.gather(targets, row)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if cache:
        dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(max(len(labels), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        lambda image, target: (tf.cast(image, tf.float32) / 255.0, target),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def cached_bytes(images: int, image_size: int) -> int:
    """Memory that ``images`` decoded images of ``image_size`` px take in a dataset's cache (uint8 RGB)."""
    return int(images) * int(image_size) ** 2 * 3


def plan_cache(images: Sequence[int], image_size: int, cache_images: bool | str, budget_gb: float) -> list[bool]:
    """Whether to keep each dataset's decoded images in memory, for datasets of ``images`` images used together
    (train, then val): ``cache_images`` true or false for all; ``"auto"``, each in turn while the decoded images
    cached so far fit ``budget_gb`` GiB. What is not cached streams from disk (:func:`make_dataset`)."""
    if cache_images != "auto":
        return [bool(cache_images)] * len(images)
    left, plan = budget_gb * 2**30, []
    for count in images:
        need = cached_bytes(count, image_size)
        plan.append(need <= left)
        left -= need if plan[-1] else 0
    return plan
