"""tf.data input pipelines over the processed images (PNG files or shards): parallel read and decode, a cache when it
fits the memory budget, seeded shuffle, batch, prefetch."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import pandas as pd
import tensorflow as tf

from ich.core.ids import is_valid_id
from ich.core.images import WHOLE_FILE, ImageStore, OpenFiles
from ich.core.labels import LABELS

__all__ = ["Locations", "LOCATION_COLUMNS", "load_table", "make_dataset", "cached_bytes", "plan_cache", "label_matrix"]


Locations: TypeAlias = Sequence[str] | pd.DataFrame
"""Where images lie: a list of whole files (PNG paths), or a frame of ``path, offset, size`` rows
(:meth:`ich.core.images.ImageStore.locate`; ``size`` -1 is the whole file)."""


def load_table(csv_path: str | os.PathLike, image_dir: str | os.PathLike, augmented: bool = False) -> pd.DataFrame:
    """Read a split or augmented CSV and add where each image lies (``path, offset, size``, from
    :class:`ich.core.images.ImageStore`: a PNG file, or a range of a shard); IDs are validated before becoming paths.

    Raises:
        ValueError: naming the first invalid ID, or an image the folder does not hold.
    """
    frame = pd.read_csv(csv_path, dtype={"ID": str})
    valid = frame["ID"].map(lambda image_id: is_valid_id(image_id, augmented=augmented))
    if not valid.all():
        raise ValueError(f"{csv_path} holds invalid image IDs, e.g. {frame.loc[~valid, 'ID'].iloc[0]!r}")
    locations = ImageStore.open(image_dir).locate(frame["ID"].tolist())
    return frame.assign(**{column: locations[column].to_numpy() for column in LOCATION_COLUMNS})


#: The columns :func:`load_table` adds: where each image's PNG bytes lie.
LOCATION_COLUMNS = ("path", "offset", "size")


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


def _ranges_dataset(sources: list[pd.DataFrame], shuffle: bool, seed: int) -> tf.data.Dataset:
    """``((bytes, ...), row)`` for every row of ``sources`` (one frame of locations per image of a row: the image,
    and for 2.5D its neighbours), read by offset from their files; in row order, or with ``shuffle`` in a new
    seeded order every epoch (the same orders every run). Only the row numbers are shuffled: memory holds one
    image per element in flight, however many rows there are."""
    columns = [
        (frame["path"].tolist(), frame["offset"].to_numpy(np.int64), frame["size"].to_numpy(np.int64)) for frame in sources
    ]
    rows = len(sources[0])
    epochs = itertools.count()

    def generate():
        order = np.random.default_rng((seed, next(epochs))).permutation(rows) if shuffle else range(rows)
        with OpenFiles() as files:
            for row in order:
                yield tuple(files.read(paths[row], int(offsets[row]), int(sizes[row])) for paths, offsets, sizes in columns), row

    spec = (tuple(tf.TensorSpec((), tf.string) for _ in sources), tf.TensorSpec((), tf.int64))
    # The known length: a learning-rate schedule counts steps by it (unknown, a generator's would be -2).
    return tf.data.Dataset.from_generator(generate, output_signature=spec).apply(tf.data.experimental.assert_cardinality(rows))


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


def label_matrix(frame: pd.DataFrame, labels: Sequence[str] = LABELS) -> np.ndarray:
    """The 0/1 targets of ``frame`` as float32 ``(rows, len(labels))``."""
    return frame[list(labels)].to_numpy(dtype=np.float32)
