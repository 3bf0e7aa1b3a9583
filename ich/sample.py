"""Which images get processed: the seed's balanced training set drawn by whole series from the training
patients, and the held-out (validation and test) series at their natural prevalence.

All functions are pure: a frame in, a frame out, randomness from a seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ich.labels import ANY, SUBTYPES, sample_balanced

__all__ = ["HOLDOUT_PROTOCOLS", "sample_series", "select_images"]

#: ``sample.holdout``: ``natural`` keeps every held-out series whole (the prevalence a reader meets);
#: ``enriched`` samples held-out slices like the training set (the seed's protocol, for comparing with
#: figures published that way).
HOLDOUT_PROTOCOLS: tuple[str, ...] = ("natural", "enriched")


def sample_series(frame: pd.DataFrame, per_label: int, seed: int, series_column: str = "SeriesInstanceUID") -> pd.DataFrame:
    """Whole series chosen so each subtype has about ``per_label`` positive slices, plus hemorrhage-free
    series with about ``per_label`` slices.

    Subtypes are filled rarest first, a series at a time in a seeded random order, until the label's
    positive slices reach ``per_label`` (or its series run out); a chosen series counts for every label
    on its slices, so a rare label is never crowded out. Then series without any hemorrhage are added until
    they hold ``per_label`` slices. Every chosen series comes whole, so each slice keeps its neighbours.

    Args:
        frame: one row per image: ``series_column`` and the 0/1 label columns.
        per_label: target positive slices per subtype (and hemorrhage-free slices), > 0.
        seed: seed of the series order; the same inputs and seed give the same sample.

    Returns:
        The rows of the chosen series, in ``frame``'s order.
    """
    if per_label <= 0:
        raise ValueError(f"`sample.per_label` must be a positive integer. Received: {per_label}")
    rng = np.random.default_rng(seed)
    per_series = frame.groupby(series_column, sort=True)[[ANY, *SUBTYPES]].sum()
    slices = frame.groupby(series_column, sort=True).size().reindex(per_series.index)
    order = per_series.index.to_numpy()[rng.permutation(len(per_series))]
    per_series, slices = per_series.loc[order], slices.loc[order]
    chosen = pd.Series(False, index=per_series.index)
    totals = per_series.sum()
    for label in sorted(SUBTYPES, key=lambda name: (totals[name], name)):
        counts = per_series[label]
        have = int(counts[chosen].sum())
        for series in counts.index[(counts > 0) & ~chosen]:
            if have >= per_label:
                break
            chosen[series] = True
            have += int(counts[series])
    clean = slices[(per_series[ANY] == 0) & ~chosen]
    enough = clean.cumsum().shift(fill_value=0) < per_label  # series until the clean slices reach per_label
    chosen[clean.index[enough.to_numpy()]] = True
    return frame[frame[series_column].isin(chosen.index[chosen.to_numpy()])]


def select_images(frame: pd.DataFrame, per_label: int, seed: int, holdout: str = "natural") -> pd.DataFrame:
    """The images to process: the balanced training sample plus the held-out images.

    Args:
        frame: one row per image with a ``split`` column (``train``/``val``/``test``; others are dropped),
            ``SeriesInstanceUID`` and the label columns.
        per_label, seed: of the training sample (:func:`sample_series`).
        holdout: ``natural`` (every held-out image: whole series at natural prevalence, independent of
            ``per_label`` and ``seed``) or ``enriched`` (held-out slices sampled per label like the seed's
            protocol, :func:`ich.labels.sample_balanced`, per split).

    Returns:
        The selected rows, sorted by ``ID``.
    """
    if holdout not in HOLDOUT_PROTOCOLS:
        raise ValueError(f"`sample.holdout` must be one of {', '.join(HOLDOUT_PROTOCOLS)}. Received: {holdout!r}")
    parts = [sample_series(frame[frame["split"] == "train"], per_label, seed)]
    for name in ("val", "test"):
        held_out = frame[frame["split"] == name]
        if holdout == "enriched" and len(held_out):
            held_out = held_out[held_out["ID"].isin(sample_balanced(held_out, per_label, seed)["ID"])]
        parts.append(held_out)
    return pd.concat(parts).sort_values("ID").reset_index(drop=True)
