"""Which images get processed: the seed's balanced training set drawn by whole series from the training
patients, and the held-out (validation and test) series at their natural prevalence.

All functions are pure: a frame in, a frame out, randomness from a seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ich.core.labels import ANY, SUBTYPES

__all__ = ["HOLDOUT_PROTOCOLS", "sample_series", "select_images", "sample_balanced"]

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
            protocol, :func:`ich.data.sample.sample_balanced`, per split).

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


def sample_balanced(wide: pd.DataFrame, per_label: int, seed: int) -> pd.DataFrame:
    """Pick about ``per_label`` images for each subtype and ``per_label`` hemorrhage-free images.

    Subtypes are filled rarest first; an image already picked for one subtype counts for every label it
    carries, so a rare label is never crowded out and the total stays near ``6 * per_label`` (the seed's
    10,000 per label gives ~55 k images on RSNA). A label with fewer positives than ``per_label`` keeps
    all of them. ``any`` positives are the union of the subtype picks.

    Args:
        wide: the wide table (``ID`` + :data:`LABELS`).
        per_label: target images per label, > 0.
        seed: seed of the random choice; the same inputs and seed give the same sample.

    Returns:
        The sampled rows of ``wide``, sorted by ``ID``.
    """
    if per_label <= 0:
        raise ValueError(f"`sample.per_label` must be a positive integer. Received: {per_label}")
    rng = np.random.default_rng(seed)
    wide = wide.sort_values("ID").reset_index(drop=True)
    chosen = np.zeros(len(wide), dtype=bool)
    positives = {label: wide[label].to_numpy() == 1 for label in SUBTYPES}
    for label in sorted(SUBTYPES, key=lambda name: (positives[name].sum(), name)):
        already = int((chosen & positives[label]).sum())
        candidates = np.flatnonzero(positives[label] & ~chosen)
        take = min(max(per_label - already, 0), len(candidates))
        chosen[rng.choice(candidates, size=take, replace=False)] = True
    negatives = np.flatnonzero(wide[ANY].to_numpy() == 0)
    chosen[rng.choice(negatives, size=min(per_label, len(negatives)), replace=False)] = True
    return wide[chosen].reset_index(drop=True)
