"""The processed images on disk, in either layout, and the one reader every consumer uses.

- ``files``: one ``<ID>.png`` per image in the folder (the demo's layout: a user can open any image).
- ``shards``: the PNG bytes packed into tar files in the WebDataset layout (``<prefix>-00000.tar`` with members
  ``<ID>.png``), a few hundred files instead of one per image, and ``shards.csv`` (``ID, shard, offset, size``: where
  each image's bytes lie). DVC then tracks a few hundred files, not 232 k, and a reader seeks straight to an
  image. The tars are plain POSIX (ustar) archives: ``tar -xf train-00000.tar`` gives the PNGs, and WebDataset
  (PyTorch) streams them as they are. Tar rather than TFRecord because every reader here (augment, the reports,
  ``ich predict``'s tools) then needs no TensorFlow, and the bytes are addressable by offset.

:class:`ShardWriter` writes shards deterministically (fixed member metadata: same images in the same order, same
bytes, same DVC hash). :class:`ImageStore` opens a folder of either layout (``shards.csv`` marks the shards layout)
and gives every image's location (file, offset, size) and bytes; :func:`read_range` reads one location.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import pandas as pd

from ich.core.files import write_csv
from ich.core.ids import image_path, is_valid_id

__all__ = [
    "LAYOUTS",
    "SHARD_INDEX",
    "WHOLE_FILE",
    "ShardWriter",
    "ShardSet",
    "ImageStore",
    "read_range",
    "LOCATION_COLUMNS",
    "load_table",
    "decode_png",
    "OpenFiles",
]

LAYOUTS = ("files", "shards")
SHARD_INDEX = "shards.csv"
WHOLE_FILE = -1  # the size of a location that is a whole file (the files layout)


class ShardWriter:
    """Packs ``(ID, PNG bytes)`` pairs, in the order given, into ``<folder>/<prefix>-NNNNN.tar`` of at most
    ``images_per_shard`` images each; each shard appears whole (written to a temporary file, then renamed).
    :attr:`rows` lists where each image landed (``ID, shard, offset, size``)."""

    def __init__(self, folder: str | os.PathLike, prefix: str, images_per_shard: int) -> None:
        if images_per_shard < 1:
            raise ValueError(f"images_per_shard must be >= 1. Received: {images_per_shard}")
        self.folder, self.prefix, self.images_per_shard = Path(folder), prefix, int(images_per_shard)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: list[tuple[str, str, int, int]] = []
        self._count = 0
        self._shards = 0
        self._stream: BinaryIO | None = None
        self._tar: tarfile.TarFile | None = None
        self._name = ""

    def add(self, image_id: str, data: bytes) -> None:
        name = image_path(self.folder, image_id, ".png", augmented=True).name  # validated before it names a member
        if self._tar is None or self._count == self.images_per_shard:
            self._close_shard()
            self._name = f"{self.prefix}-{self._shards:05d}.tar"
            self._stream = open(self._partial(), "wb")  # noqa: SIM115 (closed by _close_shard or abort)
            self._tar = tarfile.open(fileobj=self._stream, mode="w", format=tarfile.USTAR_FORMAT)
            self._shards += 1
            self._count = 0
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # fixed metadata: the same images give the same bytes
        self._tar.addfile(info, io.BytesIO(data))
        blocks = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        self.rows.append((image_id, self._name, self._tar.offset - blocks, len(data)))
        self._count += 1

    def _partial(self) -> Path:
        return self.folder / f".{self._name}.partial"

    def _close_shard(self) -> None:
        if self._tar is not None and self._stream is not None:
            self._tar.close()
            self._stream.close()
            os.chmod(self._partial(), 0o644)
            os.replace(self._partial(), self.folder / self._name)
        self._tar, self._stream = None, None

    def close(self) -> list[tuple[str, str, int, int]]:
        self._close_shard()
        return self.rows

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); finished shards stay."""
        if self._stream is not None:
            self._stream.close()
            self._partial().unlink(missing_ok=True)
        self._tar, self._stream = None, None


class ShardSet:
    """One :class:`ShardWriter` per prefix (e.g. per split) in one folder, and the folder's index at :meth:`close`:
    ``with ShardSet(folder, 1000) as shards: shards.add("train", image_id, png)``."""

    def __init__(self, folder: str | os.PathLike, images_per_shard: int) -> None:
        self.folder, self.images_per_shard = Path(folder), images_per_shard
        self.writers: dict[str, ShardWriter] = {}

    def add(self, prefix: str, image_id: str, data: bytes) -> None:
        if prefix not in self.writers:
            self.writers[prefix] = ShardWriter(self.folder, prefix, self.images_per_shard)
        self.writers[prefix].add(image_id, data)

    def close(self) -> pd.DataFrame:
        rows = [row for writer in self.writers.values() for row in writer.close()]
        index = pd.DataFrame(rows, columns=["ID", "shard", "offset", "size"])
        write_csv(index, self.folder / SHARD_INDEX)  # written last: a folder with an index has all its shards
        return index

    def __enter__(self) -> ShardSet:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            for writer in self.writers.values():
                writer.abort()


class OpenFiles:
    """A few open file descriptors for :func:`os.pread`, closed least recently used first."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self.handles: dict[str, int] = {}

    def read(self, path: str, offset: int, size: int) -> bytes:
        if size == WHOLE_FILE:
            with open(path, "rb") as handle:
                return handle.read()
        descriptor = self.handles.pop(path, None)
        if descriptor is None:
            if len(self.handles) >= self.limit:
                os.close(self.handles.pop(next(iter(self.handles))))
            descriptor = os.open(path, os.O_RDONLY)
        self.handles[path] = descriptor
        data = os.pread(descriptor, size, offset)
        if len(data) != size:
            raise OSError(f"{path} ends at byte {offset + len(data)}, before the image at {offset} (+{size} bytes) ends")
        return data

    def close(self) -> None:
        for handle in self.handles.values():
            os.close(handle)
        self.handles.clear()

    def __enter__(self) -> OpenFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_range(path: str | os.PathLike, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of ``path`` (the whole file when ``size`` is -1)."""
    with OpenFiles(1) as files:
        return files.read(str(path), int(offset), int(size))


def decode_png(data: bytes, what: str = "image") -> np.ndarray:
    """PNG bytes as an RGB uint8 array ``(H, W, 3)``.

    Raises:
        ValueError: the bytes are no readable image (``what`` names it in the message).
    """
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"Cannot read the image {what}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class ImageStore:
    """A folder of processed images in either layout (see the module docstring)."""

    folder: Path
    index: pd.DataFrame | None  # the shards layout's ``shards.csv``, by ID; None for the files layout

    @classmethod
    def open(cls, folder: str | os.PathLike) -> ImageStore:
        folder = Path(folder)
        index_file = folder / SHARD_INDEX
        if not index_file.is_file():
            return cls(folder, None)
        index = pd.read_csv(index_file, dtype={"ID": str, "shard": str, "offset": np.int64, "size": np.int64})
        if index["ID"].duplicated().any():
            raise ValueError(f"{index_file} lists an image twice, e.g. {index.loc[index['ID'].duplicated(), 'ID'].iloc[0]!r}")
        return cls(folder, index.set_index("ID"))

    @property
    def layout(self) -> str:
        return "files" if self.index is None else "shards"

    def locate(self, image_ids: Sequence[str]) -> pd.DataFrame:
        """``path, offset, size`` of each ID, in order (``size`` -1: the whole file at ``path``).

        Raises:
            ValueError: an invalid ID (it never becomes a path) or, for shards, an ID the index does not hold.
        """
        ids = list(image_ids)
        if self.index is None:
            paths = [str(image_path(self.folder, image_id, ".png", augmented=True)) for image_id in ids]
            return pd.DataFrame({"path": paths, "offset": np.zeros(len(ids), np.int64), "size": np.full(len(ids), WHOLE_FILE)})
        missing = pd.Index(ids).difference(self.index.index)
        if len(missing):
            raise ValueError(
                f"{len(missing)} images are not in {self.folder / SHARD_INDEX}, e.g. {missing[0]!r}; rerun `dvc repro preprocess`."
            )
        rows = self.index.loc[ids]
        folder = str(self.folder)
        return pd.DataFrame(
            {
                "path": [os.path.join(folder, shard) for shard in rows["shard"]],
                "offset": rows["offset"].to_numpy(np.int64),
                "size": rows["size"].to_numpy(np.int64),
            }
        )

    def read(self, image_id: str) -> bytes:
        location = self.locate([image_id]).iloc[0]
        return read_range(location["path"], location["offset"], location["size"])

    def rgb(self, image_id: str) -> np.ndarray:
        return decode_png(self.read(image_id), image_id)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*.png")) if self.index is None else len(self.index)


#: The columns :func:`load_table` adds: where each image's PNG bytes lie.
LOCATION_COLUMNS = ("path", "offset", "size")


def load_table(csv_path: str | os.PathLike, image_dir: str | os.PathLike, augmented: bool = False) -> pd.DataFrame:
    """Read a split or augmented CSV and add where each image lies (:data:`LOCATION_COLUMNS`, from
    :class:`ImageStore`: a PNG file, or a range of a shard); IDs are validated before becoming paths.

    Raises:
        ValueError: naming the first invalid ID, or an image the folder does not hold.
    """
    frame = pd.read_csv(csv_path, dtype={"ID": str})
    valid = frame["ID"].map(lambda image_id: is_valid_id(image_id, augmented=augmented))
    if not valid.all():
        raise ValueError(f"{csv_path} holds invalid image IDs, e.g. {frame.loc[~valid, 'ID'].iloc[0]!r}")
    locations = ImageStore.open(image_dir).locate(frame["ID"].tolist())
    return frame.assign(**{column: locations[column].to_numpy() for column in LOCATION_COLUMNS})
