"""Rendering ``ich predict``'s slices in memory, a chunk of whole series at a time, a chunk ahead of the model.

Each file is read, decoded and rendered by :func:`ich.imaging.slices.render_file`, the preprocess stage's own
per-file code (same windows, same resizing, same quarantine reasons), in the worker pool of :mod:`ich.core.pool`
(one task per file: a file that hangs past ``file_timeout_s`` or kills its worker costs that file only, with the
pool's reason). The images come back as arrays: no file is written, linked or encoded.

A background thread consumes the pool's results in order and assembles them into chunks, while the caller
predicts the chunk before. Memory per run: at most ``_DEPTH`` finished chunks waiting, the one being assembled
and the one the caller holds (``(n, S, S, 3)`` uint8 each, ``n`` about ``chunk_images``), plus
``_IN_FLIGHT_PER_WORKER`` images per worker in the pool.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

import numpy as np

from ich.core.pool import TaskFailure, map_in_order, resolve_workers
from ich.imaging.dicom import RSNA_PIXEL_FIX_MODES
from ich.imaging.slices import render_file, reuse_freed_memory
from ich.imaging.windows import Window
from ich.inference.scan import DicomFile

__all__ = ["RenderedChunk", "render_chunks"]

_DEPTH = 2  # finished chunks waiting for the caller
_IN_FLIGHT_PER_WORKER = 4  # tasks scheduled per worker ahead of the oldest unfinished one


@dataclass(frozen=True)
class RenderedChunk:
    """One chunk of :func:`render_chunks`: ``rows`` (indices into the scan's files) and, for those rendered,
    ``images`` ``(len(rendered), S, S, 3)`` uint8 RGB as the preprocess stage writes its PNGs; ``rendered`` are
    the rows that have an image, ``reasons`` why the others have none."""

    rows: np.ndarray
    rendered: np.ndarray
    images: np.ndarray
    reasons: dict[int, str]


def _render(item: tuple[str, str], image_size: int, windows: tuple[Window, ...], rsna_pixel_fix: str) -> np.ndarray | str:
    """One file's ``(S, S, 3)`` uint8 image, or the reason it has none (runs in a worker process)."""
    path, image_id = item
    rendered = render_file(path, image_id, image_size=image_size, windows=windows, rsna_pixel_fix=rsna_pixel_fix)
    return rendered if isinstance(rendered, str) else rendered.rgb


class _Renderer(threading.Thread):
    """Consumes the pool's per-file results in order and hands whole chunks to the caller through a queue of
    ``_DEPTH`` places; an exception is handed over too (the caller raises it), and ``None`` ends the stream."""

    def __init__(
        self, results: Generator[np.ndarray | str | TaskFailure, None, None], chunks: Sequence[np.ndarray], image_size: int
    ) -> None:
        super().__init__(name="ich-predict-render", daemon=True)
        self.results, self.chunks, self.image_size = results, chunks, image_size
        self.output: queue.Queue = queue.Queue(maxsize=_DEPTH)
        self.stopping = threading.Event()

    def _put(self, item: object) -> bool:
        while not self.stopping.is_set():
            try:
                self.output.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _chunk(self, rows: np.ndarray) -> RenderedChunk | None:
        """The next chunk from the pool's results; None when the caller stopped meanwhile."""
        images = np.empty((len(rows), self.image_size, self.image_size, 3), dtype=np.uint8)
        rendered: list[int] = []
        reasons: dict[int, str] = {}
        for row in rows:
            if self.stopping.is_set():
                return None
            result = next(self.results)
            if isinstance(result, TaskFailure):
                reasons[int(row)] = result.reason
            elif isinstance(result, str):
                reasons[int(row)] = result
            else:
                images[len(rendered)] = result
                rendered.append(int(row))
        if len(rendered) < len(rows):
            images = images[: len(rendered)].copy()  # no hidden tail of unused rows
        return RenderedChunk(np.asarray(rows), np.asarray(rendered, dtype=np.int64), images, reasons)

    def run(self) -> None:
        try:
            for rows in self.chunks:
                chunk = self._chunk(rows)
                if chunk is None or not self._put(chunk):
                    return
        except BaseException as error:  # handed to the caller, which raises it in its own thread
            self._put(error)
        finally:
            self.results.close()  # the pool's generator, closed in the thread that runs it: stops the workers
            self._put(None)


def render_chunks(
    files: Sequence[DicomFile],
    chunks: Sequence[np.ndarray],
    *,
    image_size: int,
    windows: Sequence[Window],
    rsna_pixel_fix: str = "auto",
    workers: int = 0,
    file_timeout_s: float | None = 60.0,
) -> Generator[RenderedChunk, None, None]:
    """Render the rows of ``files`` named by ``chunks`` (each chunk an array of row indices, whole series), one chunk
    ahead of the consumer, in the order of ``chunks``. Close the iterator (``contextlib.closing``) when stopping
    early: that stops the worker processes.

    Args:
        files: the scan's files.
        chunks: row indices, as :func:`ich.inference.predict.plan_chunks` cuts them.
        image_size: side of the images in pixels; windows: the model card's three windows.
        rsna_pixel_fix: ``auto`` or ``off``, as the model's training data were rendered.
        workers: rendering processes (0 = one per core).
        file_timeout_s: a file taking longer is quarantined (None: no limit; then one worker, or fewer files than
            two per worker, renders in this process).

    Raises:
        ValueError: ``rsna_pixel_fix`` is not a mode, or ``file_timeout_s`` is not positive.
    """
    if rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
        raise ValueError(f"rsna_pixel_fix must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. Received: {rsna_pixel_fix!r}")
    if file_timeout_s is not None and not file_timeout_s > 0:
        raise ValueError(f"file_timeout_s must be > 0 seconds (or None for no limit). Received: {file_timeout_s}")
    count = resolve_workers(workers)
    items = [(files[int(row)].path, files[int(row)].image_id) for rows in chunks for row in rows]
    # map_in_order is declared an Iterator; it is a generator, which the renderer closes to stop the workers.
    results = cast(
        "Generator[np.ndarray | str | TaskFailure, None, None]",
        map_in_order(
            partial(_render, image_size=int(image_size), windows=tuple(windows), rsna_pixel_fix=rsna_pixel_fix),
            items,
            workers=count,
            timeout_s=file_timeout_s,
            window=_IN_FLIGHT_PER_WORKER * count,
            initializer=reuse_freed_memory,
            in_process=file_timeout_s is None and (count == 1 or len(items) < 2 * count),
        ),
    )
    renderer = _Renderer(results, chunks, int(image_size))
    renderer.start()
    try:
        while True:
            item = renderer.output.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        renderer.stopping.set()
        renderer.join()
