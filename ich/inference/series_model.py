"""The sequence stage's computation, on the frozen CNN's outputs: every train and val slice's pooled features and
probabilities (kept in a resumable :class:`ich.inference.features.FeatureStore`), the out-of-distribution statistics
fitted on them (:mod:`ich.inference.ood`), the bidirectional GRU over each series in z order
(:mod:`ich.models.sequence`), and the model folder's card that joins them."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dvclive import Live
from ich.core.labels import label_matrix
from ich.core.params import SequenceParams
from ich.data.context import series_order, series_runs
from ich.evaluation.metrics import tune_thresholds, weighted_log_loss
from ich.inference.features import FeatureStore, fingerprint_files
from ich.inference.loading import LoadedModel
from ich.inference.ood import OodEntry, fit_ood, save_ood
from ich.models.card import ModelCard, folder_card
from ich.models.document import card_document
from ich.models.sequence import SeriesSet, fit_sequence, predict_series, slice_inputs

__all__ = [
    "SEQUENCE_FILE",
    "SplitFeatures",
    "split_features",
    "fit_ood_statistics",
    "ood_metrics",
    "fit_series_model",
    "series_card",
]

SEQUENCE_FILE = "sequence.keras"
_OOD_METRICS = ("threshold", "val_false_alarm_rate", "train_series", "val_series")


@dataclass(frozen=True)
class SplitFeatures:
    """The CNN's outputs on one split: ``features`` ``(N, F)``, ``probabilities`` ``(N, 6)``, ``channel_means``
    ``(N, 3)``, each row's ``series``, the rows as the sequence model reads them (``series_set``: inputs, targets and
    each series' rows in z order), and the ``speed`` of the feature pass (``images``, ``seconds``)."""

    frame: pd.DataFrame
    features: np.ndarray
    probabilities: np.ndarray
    channel_means: np.ndarray
    series: np.ndarray
    series_set: SeriesSet
    speed: dict[str, Any]


def split_features(
    cnn: LoadedModel, frame: pd.DataFrame, model_files: Sequence[str], store_dir: str | os.PathLike, name: str, batch_size: int
) -> SplitFeatures:
    """The CNN's outputs on ``frame`` (:func:`ich.core.images.load_table`), reused from ``store_dir`` when the model
    files, the images and the table are those they were computed from, resumed when a run was killed midway."""
    fingerprint = fingerprint_files([*model_files, *frame["path"]], extra=frame.to_csv(index=False))
    store = FeatureStore(store_dir, name)
    features, probabilities, speed = store.compute(cnn, frame, fingerprint, batch_size)
    series = frame["SeriesInstanceUID"].astype(str).to_numpy()
    runs = series_runs(series, series_order(series, frame["position_z"].to_numpy(), frame["ID"].to_numpy()))
    series_set = SeriesSet(slice_inputs(features, probabilities), label_matrix(frame), runs)
    return SplitFeatures(frame, features, probabilities, store.channel_means(), series, series_set, speed)


def fit_ood_statistics(train: SplitFeatures, val: SplitFeatures, path: str | os.PathLike) -> dict[str, Any] | None:
    """Fit the out-of-distribution statistics on the train series, their threshold on val; save them to ``path``.
    Returns their summary (:class:`ich.inference.ood.OodEntry`'s fields), or None, with a warning, when there are too
    few series to measure a spread (the model folder then goes without the check)."""
    try:
        stats, summary = fit_ood(train.features, train.channel_means, train.series, val.features, val.channel_means, val.series)
    except ValueError as error:
        logging.getLogger("ich").warning("sequence: no out-of-distribution statistics: %s", error)
        return None
    save_ood(stats, path)
    return summary


def ood_metrics(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of the OOD summary that ``metrics/sequence.json`` reports."""
    return None if summary is None else {key: summary[key] for key in _OOD_METRICS}


def fit_series_model(
    train: SplitFeatures, val: SplitFeatures, params: SequenceParams, live_dir: str | os.PathLike, output: Path, folder: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the sequence model (early-stopped on val, curves in ``live_dir``), save it as ``output/sequence.keras``
    and tune its thresholds on val. Returns the card's entry for it (in the model folder's subfolder ``folder``) and
    the stage's metrics of it."""
    with Live(str(live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        network, fitted = fit_sequence(train.series_set, val.series_set, params, weighted_log_loss, live)
    network.save(output / SEQUENCE_FILE)
    thresholds = tune_thresholds(val.series_set.targets, predict_series(network, val.series_set.rows, val.series_set.runs))
    images = sum(split.speed["images"] for split in (train, val))
    seconds = sum(split.speed["seconds"] for split in (train, val))
    metrics = {
        **fitted,
        "val_weighted_log_loss_cnn": weighted_log_loss(val.series_set.targets, val.probabilities),
        "train_series": len(train.series_set.runs),
        "val_series": len(val.series_set.runs),
        "feature_dim": train.series_set.feature_dim,
        "features_computed": images,
        "features_images_per_s": round(images / seconds, 1) if images and seconds else None,
    }
    entry = {
        "dir": folder,
        "file": SEQUENCE_FILE,
        "inputs": "CNN pooled features + its six logits and their differences to the neighbouring slices",
        "feature_dim": train.series_set.feature_dim,
        **params.model_dump(),
        **fitted,
        "thresholds": thresholds,
    }
    return entry, metrics


def series_card(
    cnn_card: ModelCard,
    cnn_dir: str,
    entry: dict[str, Any] | None,
    ood: dict[str, Any] | None,
    folder: str,
    ood_file: str,
    splits: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    tables: Sequence[str],
) -> dict[str, Any]:
    """The model folder's card: the CNN's (in ``cnn_dir``), the sequence model's ``entry`` (None: the CNN's
    predictions are final), the OOD statistics (``folder/ood_file``), and the card as a document
    (:func:`ich.models.document.card_document`: intended use, training data of ``splits`` = train, augmented, val,
    git revision, the hash of ``tables``)."""
    card = folder_card(cnn_card, cnn_dir, entry).to_json()
    if ood:
        card["ood"] = OodEntry(dir=folder, file=ood_file, **ood).model_dump()
    card.update(card_document(*splits, cnn_card.image_size, list(tables)))
    return card
