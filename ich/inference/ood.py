"""Out-of-distribution check: does a predicted series look like the series the model was trained on?

Two scores per series, both fitted by the ``sequence`` stage on the training split and calibrated on validation:

- ``ood_distance``: the Mahalanobis distance of the series' mean pooled CNN features (the features the sequence
  model reads, one ``(F,)`` vector per slice, averaged over the series' slices) from a Gaussian of the training
  series. There are far fewer training series than feature dimensions (demo: 59 series, 1408 features), so the
  covariance is Ledoit-Wolf shrunk towards a multiple of the identity (:class:`sklearn.covariance.LedoitWolf`). Its
  inverse is kept in closed form, not as an ``(F, F)`` matrix: the shrunk covariance's eigenvectors whose variance
  lies above its floor (at most one per training series) and the floor, the variance of every other direction. So
  the distance covers every direction of feature space, also those no training series varied in; a PCA to ``k``
  dimensions would be blind to a change orthogonal to those ``k``. The threshold is the :data:`QUANTILE` quantile
  of the validation series' distances (so about 1 % of in-distribution series exceed it; with few validation
  series the share achieved is recorded beside it).
- ``ood_intensity_z``: how far, in standard deviations of the training series, the series' mean of each rendered
  window (R blood, G brain, B bone; pixel values / 255) lies from the training series' mean, the largest of the
  three. Above :data:`INTENSITY_Z_LIMIT` the series is flagged too: it catches shifted intensities (a wrong
  rescale) that the CNN's features can be blind to.

A series is :data:`OOD_COLUMN` when either score is above its limit. What is stored (``ood.npz``) is arrays only,
read with ``allow_pickle=False``. Memory: one ``(F,)`` feature sum and a window sum per series of a chunk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")

__all__ = [
    "OodEntry",
    "ood_entry",
    "OOD_COLUMN",
    "DISTANCE_COLUMN",
    "INTENSITY_COLUMN",
    "SCORE_COLUMNS",
    "OOD_FILE",
    "QUANTILE",
    "INTENSITY_Z_LIMIT",
    "METHOD",
    "OodStats",
    "channel_means",
    "series_means",
    "shrunk_gaussian",
    "fit_ood",
    "save_ood",
    "load_ood",
    "score_series",
    "ood_summary",
    "ood_message",
]

#: The flag's column in ``series.csv``/``slices.csv`` (the DICOM SR reads it, :mod:`ich.inference.dicom_sr`).
OOD_COLUMN = "out_of_distribution"
DISTANCE_COLUMN = "ood_distance"
INTENSITY_COLUMN = "ood_intensity_z"
#: The columns of :func:`score_series`.
SCORE_COLUMNS: tuple[str, ...] = ("SeriesInstanceUID", DISTANCE_COLUMN, INTENSITY_COLUMN, OOD_COLUMN)
#: The statistics' file in the sequence stage's folder.
OOD_FILE = "ood.npz"
#: The share of validation series whose distance the threshold keeps inside.
QUANTILE = 0.99
#: Window means further than this many training-series standard deviations from training are flagged.
INTENSITY_Z_LIMIT = 5.0
METHOD = (
    "Mahalanobis distance of the series' mean pooled CNN features under a Ledoit-Wolf shrunk Gaussian of the training "
    f"series, threshold the {QUANTILE:.0%} quantile of the validation series; or window means more than "
    f"{INTENSITY_Z_LIMIT:g} training-series standard deviations from training"
)
_RELATIVE_GAP = 1e-6  # an eigenvalue this much above the floor is a direction of its own


class OodEntry(BaseModel):
    """What the model folder's card says of its out-of-distribution statistics (its ``ood`` field, written by the
    ``sequence`` stage): their subfolder and ``.npz`` file, the method, the distance threshold, and the false-alarm
    rate it gave on the validation series. Names must be plain names inside the model folder."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dir: str
    file: str
    method: str
    threshold: float
    val_false_alarm_rate: float | None = None
    train_series: int | None = None
    val_series: int | None = None

    @field_validator("dir", "file")
    @classmethod
    def _plain_name(cls, value: str, info: Any) -> str:
        if not _PLAIN_NAME.fullmatch(value) or value in (".", "..") or (info.field_name == "file" and not value.endswith(".npz")):
            what = "a plain .npz file name" if info.field_name == "file" else "a plain subfolder name"
            raise ValueError(f"must be {what} inside the model folder. Received: {value!r}")
        return value


def ood_entry(card: Any) -> OodEntry | None:
    """The card's ``ood`` entry (None for folders written without statistics).

    Raises:
        ValueError: naming the field, when the entry is malformed or names a file outside the folder.
    """
    raw = getattr(card, "ood", None)
    if raw is None:
        return None
    try:
        return OodEntry.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"ood.{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise ValueError(f"model.json is not a valid model card: {problems}") from None


@dataclass(frozen=True)
class OodStats:
    """The fitted statistics (see the module docstring).

    Attributes:
        location: ``(F,)`` mean of the training series' features.
        components: ``(r, F)`` orthonormal directions whose shrunk variance lies above ``floor``; variances: ``(r,)``.
        floor: the shrunk covariance's variance in every direction orthogonal to ``components``.
        threshold: distances above it are out of distribution.
        channel_mean, channel_std: ``(3,)`` mean and standard deviation of the training series' window means.
        intensity_limit: window z-scores above it are out of distribution.
    """

    location: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    floor: float
    threshold: float
    channel_mean: np.ndarray
    channel_std: np.ndarray
    intensity_limit: float = INTENSITY_Z_LIMIT

    def distances(self, features: np.ndarray) -> np.ndarray:
        """``(n,)`` Mahalanobis distances of ``(n, F)`` series features (``sqrt((x - mu)^T Sigma^-1 (x - mu))``)."""
        centred = np.asarray(features, dtype=np.float64) - self.location
        projected = centred @ self.components.T
        inside = (projected**2 / self.variances).sum(axis=1)
        outside = np.maximum((centred**2).sum(axis=1) - (projected**2).sum(axis=1), 0.0) / self.floor
        return np.sqrt(inside + outside)

    def intensity_z(self, channels: np.ndarray) -> np.ndarray:
        """``(n,)`` largest absolute z-score of ``(n, 3)`` series window means against the training series."""
        return np.abs((np.asarray(channels, dtype=np.float64) - self.channel_mean) / self.channel_std).max(axis=1)

    def flags(self, distances: np.ndarray, intensity_z: np.ndarray) -> np.ndarray:
        return (np.asarray(distances) > self.threshold) | (np.asarray(intensity_z) > self.intensity_limit)


def channel_means(images: np.ndarray) -> np.ndarray:
    """``(N, 3)`` mean of each window (channel) of rendered ``(N, S, S, 3)`` uint8 slices, in [0, 1]."""
    return np.asarray(images).mean(axis=(1, 2), dtype=np.float64) / 255.0


def series_means(values: np.ndarray, series: np.ndarray | list[str], block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per series (in order of first appearance): its key and the mean of its rows of ``values`` ``(N, k)``.

    ``values`` may be memory-mapped: it is read ``block`` rows at a time, so memory holds one float64 sum per series
    (``(S, k)``) and one block, not a float64 copy of every row."""
    keys, first, inverse = np.unique(np.asarray(series).astype(str), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(keys), values.shape[1]))
    for start in range(0, len(inverse), block):
        np.add.at(sums, inverse[start : start + block], np.asarray(values[start : start + block], dtype=np.float64))
    means = sums / np.bincount(inverse, minlength=len(keys))[:, None]
    order = np.argsort(first)
    return keys[order], means[order]


def shrunk_gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ledoit-Wolf Gaussian of ``(n, F)`` rows: ``(location, components, variances, floor)`` as :class:`OodStats`.

    Raises:
        ValueError: fewer than two rows (no spread to measure).
    """
    from sklearn.covariance import LedoitWolf  # fitting happens in training only

    features = np.asarray(features, dtype=np.float64)
    if len(features) < 2:
        raise ValueError(f"The out-of-distribution statistics need at least 2 training series. Received: {len(features)}")
    fitted = LedoitWolf().fit(features)
    variances, vectors = np.linalg.eigh(fitted.covariance_)
    floor = float(variances.min())
    if floor <= 0:  # no shrinkage (identical rows): keep the distance finite
        floor = max(float(variances.max()) * 1e-12, np.finfo(np.float64).tiny)
    above = variances > floor * (1.0 + _RELATIVE_GAP)
    return fitted.location_, vectors[:, above].T.copy(), variances[above], floor


def fit_ood(
    train_features: np.ndarray,
    train_channels: np.ndarray,
    train_series: np.ndarray,
    val_features: np.ndarray,
    val_channels: np.ndarray,
    val_series: np.ndarray,
    quantile: float = QUANTILE,
    intensity_limit: float = INTENSITY_Z_LIMIT,
) -> tuple[OodStats, dict[str, Any]]:
    """Fit on the training slices (``(N, F)`` pooled features, ``(N, 3)`` window means, series keys), averaged per
    series, and set the threshold on the validation series; returns the statistics and what the model card records
    (``threshold``, ``val_false_alarm_rate`` of both checks together, ``train_series``, ...)."""
    _, train = series_means(train_features, train_series)
    _, train_windows = series_means(train_channels, train_series)
    _, val = series_means(val_features, val_series)
    _, val_windows = series_means(val_channels, val_series)
    if len(val) == 0:
        raise ValueError("The out-of-distribution threshold needs validation series. Received: none")
    location, components, variances, floor = shrunk_gaussian(train)
    spread = train_windows.std(axis=0)
    stats = OodStats(
        location=location,
        components=components,
        variances=variances,
        floor=floor,
        threshold=0.0,
        channel_mean=train_windows.mean(axis=0),
        channel_std=np.where(spread > 0, spread, 1e-6),
        intensity_limit=float(intensity_limit),
    )
    val_distances = stats.distances(val)
    stats = replace(stats, threshold=float(np.quantile(val_distances, quantile)))
    val_flags = stats.flags(val_distances, stats.intensity_z(val_windows))
    record = {
        "method": METHOD,
        "features": "pooled CNN features (the sequence model's input), mean over each series' slices",
        "quantile": quantile,
        "threshold": stats.threshold,
        "intensity_z_limit": stats.intensity_limit,
        "val_false_alarm_rate": round(float(val_flags.mean()), 4),
        "val_distance_false_alarm_rate": round(float((val_distances > stats.threshold).mean()), 4),
        "train_series": int(len(train)),
        "val_series": int(len(val)),
        "feature_dim": int(train.shape[1]),
        "components": int(len(variances)),
    }
    return stats, record


def _arrays(stats: OodStats) -> dict[str, Any]:
    return {item.name: getattr(stats, item.name) for item in fields(stats)}


def save_ood(stats: OodStats, path: str | os.PathLike) -> Path:
    """Write the statistics as a plain ``.npz`` (arrays only)."""
    path = Path(path)
    arrays: dict[str, Any] = {name: np.asarray(value) for name, value in _arrays(stats).items()}
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_ood(path: str | os.PathLike) -> OodStats:
    """Read :func:`save_ood`'s file (no pickles).

    Raises:
        ValueError: the file lacks an array or its shapes disagree (rerun the sequence stage).
    """
    with np.load(path, allow_pickle=False) as data:
        missing = [item.name for item in fields(OodStats) if item.name not in data.files]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: rerun `dvc repro sequence` to refit the statistics")
        stats = OodStats(
            location=np.asarray(data["location"], np.float64),
            components=np.asarray(data["components"], np.float64),
            variances=np.asarray(data["variances"], np.float64),
            floor=float(data["floor"]),
            threshold=float(data["threshold"]),
            channel_mean=np.asarray(data["channel_mean"], np.float64),
            channel_std=np.asarray(data["channel_std"], np.float64),
            intensity_limit=float(data["intensity_limit"]),
        )
    dimension = stats.location.shape[0]
    if stats.components.shape[1:] != (dimension,) or stats.variances.shape != stats.components.shape[:1]:
        raise ValueError(
            f"{path}: components {stats.components.shape} and variances {stats.variances.shape} do not fit {dimension} features"
        )
    return stats


def score_series(stats: OodStats, features: np.ndarray, channels: np.ndarray, series: np.ndarray | list[str]) -> pd.DataFrame:
    """Per series (first-appearance order) of the slices given (``(N, F)`` pooled features, ``(N, 3)``
    :func:`channel_means`, series keys; every slice of each series): ``SeriesInstanceUID``, :data:`DISTANCE_COLUMN`,
    :data:`INTENSITY_COLUMN` and :data:`OOD_COLUMN`.

    Raises:
        ValueError: features of another width than the statistics (a model folder mixed from two runs).
    """
    features = np.asarray(features)
    if features.shape[1] != stats.location.shape[0]:
        raise ValueError(
            f"The model's features have {features.shape[1]} dimensions, its out-of-distribution statistics "
            f"{stats.location.shape[0]}: the folder mixes two training runs (rerun `dvc repro sequence`)"
        )
    keys, mean_features = series_means(features, series)
    _, mean_channels = series_means(channels, series)
    distances, intensity = stats.distances(mean_features), stats.intensity_z(mean_channels)
    return pd.DataFrame(
        {
            "SeriesInstanceUID": keys,
            DISTANCE_COLUMN: distances,
            INTENSITY_COLUMN: intensity,
            OOD_COLUMN: stats.flags(distances, intensity),
        }
    )


def ood_summary(scores: pd.DataFrame | None, stats: OodStats | None) -> dict[str, Any]:
    """``summary.json``'s figures of the check: ``ood_checked``, ``ood_series`` (series flagged), ``ood_threshold``
    and ``ood_intensity_z_limit`` (``None`` each when the model folder has no statistics)."""
    if scores is None or stats is None:
        return {"ood_checked": False, "ood_series": None, "ood_threshold": None, "ood_intensity_z_limit": None}
    return {
        "ood_checked": True,
        "ood_series": int(scores[OOD_COLUMN].astype(bool).sum()),
        "ood_threshold": stats.threshold,
        "ood_intensity_z_limit": stats.intensity_limit,
    }


def ood_message(summary: Mapping[str, Any], series: int) -> str:
    """One line for the terminal (and the report's banner) on the check's outcome over ``series`` series."""
    if not summary.get("ood_checked"):
        return (
            "This model folder has no out-of-distribution statistics (trained before they existed, or a CNN folder alone): "
            "series were not checked against the training data (rerun `dvc repro sequence` to add them)."
        )
    flagged = summary.get("ood_series") or 0
    if not flagged:
        return f"All {series} series lie within the training data (out-of-distribution check)."
    return (
        f"{flagged} of {series} series lie outside the training data (their CNN features or window intensities are unlike "
        f"the training series'): predictions there are unreliable. They are marked in the column {OOD_COLUMN}."
    )
