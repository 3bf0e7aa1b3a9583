"""Slice context: the order of the slices in each series, and the 2.5D input built from a slice's neighbours.

A series is read in the order of its slices' positions along z (``ImagePositionPatient[2]``; RSNA has no
InstanceNumber), never by ID or file order. Slices whose position is unknown go after those with one; ties
and unknowns keep a deterministic order (by ID when IDs are given, else by row).

2.5D input (``model.context_slices = k``, 0 = a single slice): each image keeps its three windows in their
channels, but takes them from three slices, as the 1st-place RSNA solution stacked "slice-1 brain window,
slice subdural, slice+1 bone":

- red (blood window, 80/200 HU) from the slice itself,
- green (brain window, 40/80 HU) from the slice ``k`` before it along z,
- blue (bone window, 600/2800 HU) from the slice ``k`` after it,

at series edges the nearest existing slice stands in. Every channel keeps the window an ImageNet-pretrained
stem and the single-slice model saw in it, so weights and channel statistics stay usable; a composed image
is one RGB image, so offline augmentation and online flips transform the stack as one. With ``k = 0``
(or a series of one slice) the composition is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["series_order", "neighbour_indices", "neighbour_ids", "compose_context", "series_runs"]


def series_order(
    series: Sequence[str] | np.ndarray, positions: Sequence[float] | np.ndarray, ids: Sequence[str] | np.ndarray | None = None
) -> np.ndarray:
    """Row indices that sort the rows by series (first appearance), then by ``positions`` ascending.

    Unknown positions (NaN/None) come last in their series; ties and unknowns are ordered by ``ids`` when given,
    else by their row. The series keep the order in which they first appear.
    """
    series = np.asarray(series, dtype=object)
    count = len(series)
    z = np.asarray(_float_positions(positions), dtype=np.float64)
    if len(z) != count or (ids is not None and len(ids) != count):
        raise ValueError(f"series ({count}), positions ({len(z)}) and ids must have one entry per slice")
    _, first_index, series_code = np.unique(series.astype(str), return_index=True, return_inverse=True)
    series_rank = np.argsort(np.argsort(first_index))[series_code]  # series in order of first appearance
    unknown = np.isnan(z)
    tie_break = np.arange(count) if ids is None else np.unique(np.asarray(ids, dtype=str), return_inverse=True)[1]
    # np.lexsort: the last key is the primary one.
    return np.lexsort((np.arange(count), tie_break, np.where(unknown, 0.0, z), unknown, series_rank))


def _float_positions(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` as float64, ``None`` and empty strings as NaN."""
    return np.array([np.nan if value is None or value == "" else float(value) for value in values], dtype=np.float64)


def series_runs(series: Sequence[str] | np.ndarray, order: np.ndarray) -> list[np.ndarray]:
    """The row indices of each series, in z order: ``order`` (from :func:`series_order`) cut where the series changes."""
    series = np.asarray(series, dtype=object)[order]
    if len(order) == 0:
        return []
    cuts = np.flatnonzero(series[1:] != series[:-1]) + 1
    return np.split(np.asarray(order), cuts)


def neighbour_indices(
    series: Sequence[str] | np.ndarray,
    positions: Sequence[float] | np.ndarray,
    steps: int,
    ids: Sequence[str] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the row ``steps`` slices before it and the row ``steps`` slices after it in its series'
    z order, clamped to the series' first and last slice (``steps = 0``: the row itself)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0. Received: {steps}")
    order = series_order(series, positions, ids)
    before = np.arange(len(order))
    after = np.arange(len(order))
    for run in series_runs(series, order):
        places = np.arange(len(run))
        before[run] = run[np.maximum(places - steps, 0)]
        after[run] = run[np.minimum(places + steps, len(run) - 1)]
    return before, after


def compose_context(images: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """2.5D images: red from each image itself, green from ``images[before]``, blue from ``images[after]``
    (see the module docstring). ``images`` is ``(N, H, W, 3)`` rendered slices of any dtype."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3). Received shape {images.shape}")
    composed = images.copy()
    composed[..., 1] = images[before, ..., 1]
    composed[..., 2] = images[after, ..., 2]
    return composed


def neighbour_ids(frame, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`neighbour_indices` of a table with ``ID``, ``SeriesInstanceUID`` and ``position_z`` columns, as the
    IDs of each row's neighbours (``steps = 0``: the row's own ID)."""
    ids = frame["ID"].astype(str).to_numpy()
    before, after = neighbour_indices(
        frame["SeriesInstanceUID"].astype(str).to_numpy(), frame["position_z"].to_numpy(), steps, ids
    )
    return ids[before], ids[after]
