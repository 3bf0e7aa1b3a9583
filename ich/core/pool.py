"""The one worker pool: a function over many files in worker processes, results in input order, with a time
limit per task and replacement of workers that die.

Built on `pebble <https://pypi.org/project/Pebble/>`_'s ``ProcessPool``, which stops a worker whose task runs
past its time limit and starts a new one when a worker dies (a decoder's segfault, ``os._exit``, the
out-of-memory killer). What a task costs the run is then that task only: it comes back as a
:class:`TaskFailure` with the reason, and the other tasks go on. The index, preprocess and predict use it;
:func:`map_chunks_in_order` sends many small items a task at a time.

Memory: at most ``window`` tasks are scheduled ahead of the oldest unfinished one, and results are yielded as
soon as every earlier one is, so memory stays flat however many items there are (232 k or 752 k files).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, Generic, TypeVar

from pebble import ProcessExpired, ProcessPool

from ich.core.quarantine import timed_out, worker_died

__all__ = ["TaskFailure", "resolve_workers", "map_in_order", "map_chunks_in_order"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskFailure(Generic[T]):
    """A task that did not finish: its ``item`` and the ``reason`` (one line, for a quarantine list)."""

    item: T
    reason: str


def resolve_workers(workers: int) -> int:
    """``workers`` as a process count: 0 = one per core; a negative count is an error."""
    if workers < 0:
        raise ValueError(f"`workers` must be 0 (all cores) or a positive count. Received: {workers}")
    return workers or os.cpu_count() or 1


def _ignore_interrupt(initializer: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which then stops the workers
    if initializer is not None:
        initializer()


def map_in_order(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int = 0,
    timeout_s: float | None = None,
    window: int | None = None,
    initializer: Callable[[], None] | None = None,
    in_process: bool = False,
) -> Iterator[R | TaskFailure[T]]:
    """``function(item)`` for every item, in worker processes, yielding results in input order.

    A task that runs past ``timeout_s`` seconds, or whose worker dies, yields a :class:`TaskFailure` (its worker
    is replaced). An exception raised by ``function`` itself is raised here, in the caller: per-item problems
    are for ``function`` to turn into results; what it raises is a problem of the run (a full disk).

    Args:
        function: a picklable module-level function of one argument.
        items: read lazily, ``window`` ahead of the oldest unfinished task.
        workers: processes (0 = one per core).
        timeout_s: the time limit of one task in seconds (None: no limit).
        window: tasks in flight at most (default ``64 * workers``).
        initializer: run once in each worker process (and once here with ``in_process``).
        in_process: run every task in this process instead (no isolation, no time limit): for one worker or
            a handful of items, where starting processes costs more than it saves.
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ValueError(f"The time limit must be > 0 seconds (or None for no limit). Received: {timeout_s}")
    count = resolve_workers(workers)
    if in_process:
        if initializer is not None:
            initializer()
        for item in items:
            yield function(item)
        return
    window = window or 64 * count
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    pending: deque[tuple[T, Any]] = deque()
    upcoming = iter(items)
    pool = ProcessPool(max_workers=count, initializer=_ignore_interrupt, initargs=(initializer,), context=context)
    finished = False
    try:
        while True:
            for item in islice(upcoming, window - len(pending)):
                pending.append((item, pool.schedule(function, args=(item,), timeout=timeout_s)))
            if not pending:
                finished = True
                return
            item, future = pending.popleft()
            try:
                yield future.result()
            except FutureTimeout:
                yield TaskFailure(item, timed_out(timeout_s or 0.0))
            except ProcessExpired as error:
                yield TaskFailure(item, worker_died(error.exitcode))
    finally:
        if finished:
            pool.close()
        else:
            pool.stop()
        pool.join()


def _run_chunk(function: Callable[[T], R], prepare: Callable[[list[T]], object] | None, chunk: list[T]) -> list[R]:
    if prepare is not None:
        prepare(chunk)
    return [function(item) for item in chunk]


def map_chunks_in_order(
    function: Callable[[T], R],
    items: Iterable[T],
    *,
    chunk_size: int,
    workers: int = 0,
    timeout_s: float | None = None,
    window: int | None = None,
    initializer: Callable[[], None] | None = None,
    in_process: bool = False,
    prepare: Callable[[list[T]], object] | None = None,
) -> Iterator[R | TaskFailure[T]]:
    """:func:`map_in_order`, sending the workers ``chunk_size`` items a task: for many small items (a header, a
    slice), where one task per item costs the parent more than the work (pebble's bookkeeping and a message each way).

    A chunk that runs past ``timeout_s`` (the whole chunk gets the limit of one item: a healthy chunk takes a small
    part of it) or whose worker dies is run again one item a task, each with ``timeout_s``, so only the item at fault
    yields a :class:`TaskFailure`, with the reason; its neighbours' results come back as usual, in input order.

    Args:
        function, items, workers, timeout_s, initializer, in_process: as for :func:`map_in_order`.
        chunk_size: items per task (>= 1).
        window: chunks in flight at most (default ``2 * workers``).
        prepare: called in the worker with each chunk before its items (to start reading their files ahead, say).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1. Received: {chunk_size}")
    count = resolve_workers(workers)
    upcoming = iter(items)
    chunks = iter(lambda: list(islice(upcoming, chunk_size)), [])
    results = map_in_order(
        partial(_run_chunk, function, prepare),
        chunks,
        workers=count,
        timeout_s=timeout_s,
        window=window or 2 * count,
        initializer=initializer,
        in_process=in_process,
    )
    for result in results:
        if not isinstance(result, TaskFailure):
            yield from result
            continue
        # One item of this chunk hung or killed its worker: run the chunk's items one a task to find which.
        yield from map_in_order(
            function, result.item, workers=min(count, len(result.item)), timeout_s=timeout_s, initializer=initializer
        )
