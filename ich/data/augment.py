"""Offline augmentation of the training split: oversample minority subtypes with albumentations."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import albumentations as A
import cv2
import numpy as np
import pandas as pd

from ich.core.files import atomic_write_bytes
from ich.core.ids import image_path
from ich.core.images import ImageStore, OpenFiles, ShardSet, decode_png
from ich.core.labels import SUBTYPES
from ich.core.params import AugmentParams
from ich.data.context import compose_context
from ich.imaging.png import encode_png

__all__ = ["build_pipeline", "plan_copies", "augmented_id", "write_augmented"]


def build_pipeline(params: AugmentParams) -> Callable[..., dict]:
    """The seed's augmentations, seeded: flips, mild rotation, brightness/contrast, blur, elastic.

    Geometric transforms fill with 0, which is air in all three windows.
    """
    return A.Compose(
        [
            A.HorizontalFlip(p=params.hflip_p),
            A.VerticalFlip(p=params.vflip_p),
            A.Rotate(limit=params.rotate_limit, border_mode=cv2.BORDER_CONSTANT, fill=0, p=params.rotate_p),
            A.RandomBrightnessContrast(
                brightness_limit=params.brightness_limit, contrast_limit=params.contrast_limit, p=params.brightness_contrast_p
            ),
            A.GaussianBlur(blur_limit=(3, params.blur_limit), p=params.blur_p),
            A.ElasticTransform(
                alpha=params.elastic_alpha,
                sigma=params.elastic_sigma,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=params.elastic_p,
            ),
        ],
        seed=params.seed,
    )


def augmented_id(source_id: str, copy_index: int) -> str:
    """``ID_12cadc6af`` + copy 3 -> ``ID_12cadc6af_aug3`` (visibly derived from its source)."""
    return f"{source_id}_aug{copy_index}"


def plan_copies(
    train: pd.DataFrame, target_per_label: int, max_copies_per_image: int, seed: int, labels: Sequence[str] = SUBTYPES
) -> pd.DataFrame:
    """Decide which training images to copy, so each subtype gets near ``target_per_label`` positives.

    Labels are filled rarest first; a copy carries all labels of its source, so it counts for each
    of them. Sources of a label are used round-robin in a seeded order, at most
    ``max_copies_per_image`` copies each.

    Returns:
        One row per copy: ``ID`` (new), ``source_ID`` and the source's other columns.
    """
    rng = np.random.default_rng(seed)
    train = train.sort_values("ID").reset_index(drop=True)
    counts = {label: int(train[label].sum()) for label in labels}
    copies_of = np.zeros(len(train), dtype=np.int64)
    chosen: list[int] = []
    for label in sorted(labels, key=lambda name: (counts[name], name)):
        sources = rng.permutation(np.flatnonzero(train[label].to_numpy() == 1))
        if len(sources) == 0:
            continue
        position = 0
        stalled = 0
        while counts[label] < target_per_label and stalled < len(sources):
            index = sources[position % len(sources)]
            position += 1
            if copies_of[index] >= max_copies_per_image:
                stalled += 1
                continue
            stalled = 0
            copies_of[index] += 1
            chosen.append(int(index))
            for name in labels:
                counts[name] += int(train.at[index, name])
    plan = train.iloc[chosen].copy()
    plan.insert(0, "source_ID", plan["ID"])
    numbering: dict[str, int] = {}
    new_ids = []
    for source in plan["source_ID"]:
        numbering[source] = numbering.get(source, 0) + 1
        new_ids.append(augmented_id(source, numbering[source]))
    plan["ID"] = new_ids
    return plan.reset_index(drop=True)


def write_augmented(
    copies: Iterable[tuple[str, str]],
    png_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    transform: Callable[..., dict],
    neighbours: Mapping[str, tuple[str, str]] | None = None,
    images_per_shard: int | None = None,
) -> int:
    """Write each planned copy: read the source's PNG from ``png_dir`` (either layout, :class:`ich.core.images.ImageStore`),
    transform it, write ``<output_dir>/<new>.png``, or with ``images_per_shard`` pack the copies into
    ``augmented-NNNNN.tar`` shards and their ``shards.csv``.

    With ``neighbours`` (2.5D input: ``{source ID: (ID before, ID after)}`` along z, from
    :func:`ich.data.context.neighbour_ids`), the source is first composed with its neighbours
    (:func:`ich.data.context.compose_context`), and the composed image is transformed as one.

    Args:
        copies: ``(source ID, new ID)`` pairs from :func:`plan_copies`, in the order the seeded
            ``transform`` is applied.
        png_dir: folder of the preprocessed images.
        output_dir: existing folder for the copies; each file (or shard) appears atomically, complete or not at all.
        transform: an albumentations pipeline (see :func:`build_pipeline`).

    Returns:
        How many copies were written.

    Raises:
        FileNotFoundError: a source image is missing or unreadable (rerun `dvc repro preprocess`).
    """
    store = ImageStore.open(png_dir)
    files = OpenFiles()

    def read(image_id: str) -> np.ndarray:
        try:
            location = store.locate([image_id]).iloc[0]
            return decode_png(files.read(location["path"], int(location["offset"]), int(location["size"])), image_id)
        except (OSError, ValueError) as error:
            raise FileNotFoundError(
                f"Cannot read {image_id} from {png_dir}, a source of the training split ({error}); rerun `dvc repro preprocess`."
            ) from error

    written = 0
    with contextlib.ExitStack() as stack:
        stack.callback(files.close)
        shards = stack.enter_context(ShardSet(output_dir, images_per_shard)) if images_per_shard else None
        for source_id, new_id in copies:
            image = read(source_id)
            if neighbours is not None:
                before, after = neighbours[source_id]
                image = compose_context(np.stack([image, read(before), read(after)]), np.array([1]), np.array([2]))[0]
            png = encode_png(transform(image=image)["image"])
            if shards is not None:
                shards.add("augmented", new_id, png)
            else:
                atomic_write_bytes(image_path(output_dir, new_id, ".png", augmented=True), png)
            written += 1
    return written
