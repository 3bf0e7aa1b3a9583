"""tf.data input pipelines over the PNGs: parallel decode, cache, seeded shuffle, batch, prefetch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from ich.core.ids import is_valid_id
from ich.core.labels import LABELS

__all__ = ["load_table", "make_dataset", "label_matrix"]


def load_table(csv_path: str | os.PathLike, image_dir: str | os.PathLike, augmented: bool = False) -> pd.DataFrame:
    """Read a split or augmented CSV and add a ``path`` column; IDs are validated before becoming paths.

    Raises:
        ValueError: naming the first invalid ID.
    """
    frame = pd.read_csv(csv_path, dtype={"ID": str})
    valid = frame["ID"].map(lambda image_id: is_valid_id(image_id, augmented=augmented))
    if not valid.all():
        raise ValueError(f"{csv_path} holds invalid image IDs, e.g. {frame.loc[~valid, 'ID'].iloc[0]!r}")
    frame["path"] = [str(Path(image_dir) / f"{image_id}.png") for image_id in frame["ID"]]
    return frame


def _decode(path: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.io.decode_png(tf.io.read_file(path), channels=3)
    image = tf.ensure_shape(image, (None, None, 3))
    if image_size:
        image = tf.image.resize(image, (image_size, image_size), method="area")
        image = tf.cast(tf.round(image), tf.uint8)
    return image


def _compose(image: tf.Tensor, before: tf.Tensor, after: tf.Tensor) -> tf.Tensor:
    """:func:`ich.data.context.compose_context` in TensorFlow: red from the image, green from ``before``, blue from ``after``."""
    return tf.concat([image[..., 0:1], before[..., 1:2], after[..., 2:3]], axis=-1)


def make_dataset(
    paths: Sequence[str],
    labels: np.ndarray,
    image_size: int,
    batch_size: int,
    shuffle: bool,
    seed: int,
    cache: bool = True,
    neighbours: tuple[Sequence[str], Sequence[str]] | None = None,
) -> tf.data.Dataset:
    """Images as float32 ``(batch, H, W, 3)`` in ``[0, 1]`` with float32 ``(batch, labels)`` targets.

    ``neighbours``: for 2.5D input, the PNG paths of each image's neighbour before and after it along z; the image
    then takes its green channel from the first and its blue channel from the second (:mod:`ich.data.context`).

    PNGs are decoded in parallel; the decoded uint8 images are cached in memory (the demo's and a
    moderate subset's fit easily; ``cache=False`` for sets that do not), then shuffled by ``seed``
    (a new order every epoch, the same orders every run), scaled, batched and prefetched.
    """
    labels = np.asarray(labels, dtype=np.float32)
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} label rows")
    if neighbours is None:
        dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
        dataset = dataset.map(
            lambda path, target: (_decode(path, image_size), target),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        before, after = (list(side) for side in neighbours)
        if not len(before) == len(after) == len(paths):
            raise ValueError(f"{len(paths)} paths but {len(before)}/{len(after)} neighbour paths")
        dataset = tf.data.Dataset.from_tensor_slices(((list(paths), before, after), labels))
        dataset = dataset.map(
            lambda triple, target: (_compose(*(_decode(path, image_size) for path in triple)), target),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(
        lambda image, target: (tf.cast(image, tf.float32) / 255.0, target),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def label_matrix(frame: pd.DataFrame, labels: Sequence[str] = LABELS) -> np.ndarray:
    """The 0/1 targets of ``frame`` as float32 ``(rows, len(labels))``."""
    return frame[list(labels)].to_numpy(dtype=np.float32)
