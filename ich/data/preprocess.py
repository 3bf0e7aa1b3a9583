"""DICOM -> HU -> three windows -> square RGB PNG, in parallel, streaming, with quarantine."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import pandas as pd

from ich.imaging.dicom import RSNA_PIXEL_FIX_MODES, UnusableSlice, read_ct_slice
from ich.core.files import write_file
from ich.core.ids import image_path
from ich.core.labels import LABELS
from ich.imaging.png import encode_png
from ich.imaging.rendering import render_rgb
from ich.imaging.windows import DEFAULT_WINDOWS, Window

__all__ = [
    "FileResult",
    "process_file",
    "process_many",
    "SPLIT_COLUMNS",
    "PreprocessOutcome",
    "collect_outcome",
]

# Speed levers, measured by benchmarks/preprocess.py and benchmarks/preprocess_stage.py: one LUT gather
# instead of three float passes (ich.imaging.rendering); OpenCV's area resize; the PNG writer of ich.imaging.png (numpy "Up"
# filter, ISA-L deflate); one worker process per core.
_REASON_LIMIT = 200


@dataclass(frozen=True)
class FileResult:
    """Outcome for one ID: ``metadata`` when a PNG was written, else ``reason`` for the quarantine."""

    image_id: str
    metadata: dict[str, object] | None
    reason: str | None


@dataclass(frozen=True)
class _Job:
    dicom_dir: str
    png_dir: str
    image_size: int
    windows: tuple[Window, ...]
    rsna_pixel_fix: str = "auto"


def _clip(text: str) -> str:
    """One line of at most ``_REASON_LIMIT`` characters (a quarantine reason)."""
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _reason(step: str, error: BaseException) -> str:
    """``"<step> failed (TypeName: message)"``, clipped to one short line."""
    message = " ".join(str(error).split())
    return _clip(f"{step} failed ({type(error).__name__}: {message})" if message else f"{step} failed ({type(error).__name__})")


def _caused_by_the_file(error: BaseException) -> bool:
    """Any ``Exception``, and the panics of Rust decoders (pylibjpeg-rle, ...): pyo3 derives its
    ``PanicException`` from ``BaseException``, yet a panic on one damaged file must cost only that file.
    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` are never the file's doing."""
    return isinstance(error, Exception) or type(error).__module__ == "pyo3_runtime"


def process_file(image_id: str, job: _Job) -> FileResult:
    """Turn ``<dicom_dir>/<ID>.dcm`` into ``<png_dir>/<ID>.png``; every failure of the file becomes a reason.

    This is the boundary between one untrusted file and the run: reading, decoding, windowing and
    encoding each turn any exception into a short reason naming the step and the error. Only writing
    the PNG may raise (a full disk or a read-only output is no property of the file).
    """
    try:
        source = image_path(job.dicom_dir, image_id, ".dcm")
        target = image_path(job.png_dir, image_id, ".png")
    except ValueError:
        return FileResult(image_id, None, "invalid image ID (expected ID_<hex>)")
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        return FileResult(image_id, None, "file missing: no <ID>.dcm in data.dicom_dir")
    except OSError as error:
        return FileResult(image_id, None, f"file unreadable: {error.strerror or type(error).__name__}")
    except Exception as error:  # per-file boundary: see the docstring
        return FileResult(image_id, None, _reason("reading the file", error))
    try:
        ct_slice = read_ct_slice(data, image_id, job.rsna_pixel_fix)
    except UnusableSlice as error:
        return FileResult(image_id, None, _clip(str(error)))
    except BaseException as error:  # damaged headers make pydicom raise almost anything, some of it lazily
        if not _caused_by_the_file(error):
            raise
        return FileResult(image_id, None, _reason("decoding the DICOM", error))
    try:
        rgb = render_rgb(ct_slice, job.image_size, job.windows)
    except Exception as error:
        return FileResult(image_id, None, _reason("windowing", error))
    try:
        png = encode_png(rgb)
    except Exception as error:
        return FileResult(image_id, None, _reason("PNG encoding", error))
    write_file(target, png)
    return FileResult(image_id, ct_slice.metadata, None)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _reuse_freed_memory() -> None:
    """Make glibc's malloc keep the few MB each file needs on its heap instead of mapping and unmapping them.

    Every file allocates arrays of 0.5-1 MB (the file, its stored and int32 pixels, the RGBA gather), above
    glibc's default threshold for fresh ``mmap`` pages: each one was faulted in and zeroed again, about 1,000
    page faults per file and a third of a worker's CPU time. Other C libraries keep their own behaviour.
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 128 << 20)


def _serve(job: _Job, connection, parent: int) -> None:
    """A worker process: process the IDs the parent sends, in order, answering each with its result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which then stops the workers
    _reuse_freed_memory()
    while True:
        while not connection.poll(1.0):
            if os.getppid() != parent:  # the parent was killed: nobody will read our results
                return
        try:
            task = connection.recv()
        except EOFError:
            return
        if task is None:
            return
        index, image_id = task
        try:
            message = (index, process_file(image_id, job), None)
        except Exception as error:  # an output that cannot be written: the parent raises it
            message = (index, None, error)
        try:
            connection.send(message)
        except Exception as error:  # an exception that cannot be pickled
            connection.send((index, None, RuntimeError(f"{type(error).__name__}: {error}")))


class _Worker:
    """One worker process, its pipe, and the tasks sent to it that have no result yet (oldest first)."""

    def __init__(self, context, job: _Job) -> None:
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(job, child, os.getpid()), daemon=True)
        self.process.start()
        child.close()
        self.tasks: deque[tuple[int, str]] = deque()
        self.started = 0.0  # when the oldest task in ``tasks`` began (time.monotonic)

    def send(self, task: tuple[int, str]) -> None:
        if not self.tasks:
            self.started = time.monotonic()
        self.tasks.append(task)
        self.connection.send(task)

    def receive_ready(self, done: dict[int, FileResult]) -> None:
        """Move every result already in the pipe into ``done``; re-raise a worker's write error."""
        while self.tasks and self.connection.poll():
            try:
                index, result, error = self.connection.recv()
            except (EOFError, OSError):
                return
            if error is not None:
                raise error
            self.tasks.popleft()
            done[index] = result
            self.started = time.monotonic()

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.connection.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
        self.process.join()
        self.connection.close()


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"the worker process died while processing this file ({how})"


def _process_isolated(
    ids: list[str], job: _Job, workers: int, file_timeout_s: float | None, window: int
) -> Iterator[FileResult]:
    """Process ``ids`` in ``workers`` processes, one file at a time each, yielding results in input order.

    A file that takes longer than ``file_timeout_s`` seconds, or whose worker dies (a decoder's segfault,
    ``os._exit``, the out-of-memory killer), gets a reason; its worker is replaced and the other files it
    had been sent are sent again. At most ``window`` results wait for an earlier one, so memory stays flat.
    """
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    prefetch = 2  # each worker holds its next file, so it never waits for the parent
    retry: deque[tuple[int, str]] = deque()  # sent to a worker that was replaced, in input order
    upcoming = iter(enumerate(ids))
    sent_up_to = 0  # every index below this one has been sent at least once
    done: dict[int, FileResult] = {}
    next_index = 0
    pool = [_Worker(context, job) for _ in range(min(workers, len(ids)))]

    def replace(worker: _Worker, first_reason: str | None) -> None:
        worker.stop(kill=True)
        tasks = list(worker.tasks)
        if first_reason is not None and tasks:
            index, image_id = tasks.pop(0)
            done[index] = FileResult(image_id, None, first_reason)
        retry.extendleft(reversed(tasks))
        pool[pool.index(worker)] = _Worker(context, job)

    try:
        idle_deaths = 0
        while next_index < len(ids):
            for slot in range(len(pool)):
                while len(pool[slot].tasks) < prefetch:
                    if retry:
                        task = retry.popleft()
                    elif sent_up_to < len(ids) and sent_up_to - next_index < window:
                        task = next(upcoming)
                        sent_up_to += 1
                    else:
                        break
                    try:
                        pool[slot].send(task)
                    except OSError:  # the worker died while idle: its tasks go to a new one
                        idle_deaths += 1
                        if idle_deaths > 3 * len(pool):
                            raise RuntimeError("preprocess worker processes keep dying before they get a file") from None
                        replace(pool[slot], None)
            busy = [worker for worker in pool if worker.tasks]
            timeout = None
            if file_timeout_s is not None and busy:
                timeout = max(0.0, min(worker.started for worker in busy) + file_timeout_s - time.monotonic())
            ready = set(wait([worker.connection for worker in busy] + [worker.process.sentinel for worker in busy], timeout))
            now = time.monotonic()
            for worker in busy:
                if worker.connection in ready:
                    worker.receive_ready(done)
                if not worker.tasks:
                    continue
                if worker.process.sentinel in ready:  # it exited
                    worker.receive_ready(done)  # results sent just before it died
                    worker.process.join()
                    replace(worker, _death_reason(worker.process.exitcode))
                elif file_timeout_s is not None and now - worker.started > file_timeout_s:
                    replace(worker, f"timed out after {file_timeout_s:g} s (its worker process was stopped)")
            while next_index in done:
                yield done.pop(next_index)
                next_index += 1
    finally:
        for worker in pool:
            worker.stop(kill=next_index < len(ids))


def process_many(
    image_ids: Iterable[str],
    dicom_dir: str | os.PathLike,
    png_dir: str | os.PathLike,
    image_size: int,
    windows: Sequence[Window] = DEFAULT_WINDOWS,
    workers: int = 0,
    rsna_pixel_fix: str = "auto",
    file_timeout_s: float | None = None,
) -> Iterator[FileResult]:
    """Process IDs across ``workers`` processes (0 = all cores), yielding one result per ID in input order.

    With ``file_timeout_s`` every file is processed in a worker process, so a decoder that hangs or
    crashes costs that file (quarantined with the reason), never the run. Without it, one worker (or
    fewer files than two per worker) runs in this process. Results stream back as they are ready, so
    memory stays flat however many files there are.
    """
    if rsna_pixel_fix not in RSNA_PIXEL_FIX_MODES:
        raise ValueError(f"rsna_pixel_fix must be one of {', '.join(RSNA_PIXEL_FIX_MODES)}. Received: {rsna_pixel_fix!r}")
    if file_timeout_s is not None and not file_timeout_s > 0:
        raise ValueError(f"file_timeout_s must be > 0 seconds (or None for no limit). Received: {file_timeout_s}")
    job = _Job(str(dicom_dir), str(png_dir), int(image_size), tuple(windows), rsna_pixel_fix)
    Path(png_dir).mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    ids = list(image_ids)
    if file_timeout_s is None and (workers == 1 or len(ids) < 2 * workers):
        for image_id in ids:
            yield process_file(image_id, job)
        return
    yield from _process_isolated(ids, job, workers, file_timeout_s, window=64 * workers)


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
