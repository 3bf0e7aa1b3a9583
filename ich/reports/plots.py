"""Evaluation plots: per-label ROC, precision-recall and confusion data for dvclive, and a captioned montage."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from dvclive import Live
from ich.core.images import decode_png, read_range
from ich.core.labels import LABELS

__all__ = ["SHORT_NAMES", "log_label_plots", "montage"]

#: Short label names for captions.
SHORT_NAMES = {
    "any": "any",
    "epidural": "EDH",
    "intraparenchymal": "IPH",
    "intraventricular": "IVH",
    "subarachnoid": "SAH",
    "subdural": "SDH",
}


def log_label_plots(live: Live, y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> None:
    """Log per label (``(N, 6)`` arrays in :data:`LABELS` order) the ROC and precision-recall curves, where
    the label has both classes, and the confusion matrix at ``threshold``."""
    y_true = np.asarray(y_true).astype(int)
    for index, label in enumerate(LABELS):
        if y_true[:, index].min() != y_true[:, index].max():
            live.log_sklearn_plot("roc", y_true[:, index], y_prob[:, index], name=f"roc/{label}")
            live.log_sklearn_plot("precision_recall", y_true[:, index], y_prob[:, index], name=f"precision_recall/{label}")
        predicted = (y_prob[:, index] >= threshold).astype(int)
        live.log_sklearn_plot("confusion_matrix", y_true[:, index].tolist(), predicted.tolist(), name=f"confusion/{label}")


def montage(frame: pd.DataFrame, probabilities: np.ndarray, threshold: float, count: int, seed: int) -> np.ndarray:
    """A grid of slices, half positive where possible, each captioned with its true (T) and predicted (P)
    labels: ``(rows * 192, 4 * 192, 3)`` uint8 RGB. ``frame`` has the label columns, ``ID`` and where each image
    lies (``path``, and for shards ``offset, size``: :func:`ich.core.images.load_table`)."""
    rng = np.random.default_rng(seed)
    positives = np.flatnonzero(frame["any"].to_numpy() == 1)
    negatives = np.flatnonzero(frame["any"].to_numpy() == 0)
    half = count // 2
    chosen = np.concatenate(
        [
            rng.choice(positives, size=min(len(positives), count - min(half, len(negatives))), replace=False),
            rng.choice(negatives, size=min(half, len(negatives)), replace=False),
        ]
    ).astype(int)
    tiles = []
    for index in chosen:
        row = frame.iloc[index]  # an unreadable image raises ValueError, naming it
        size = int(row["size"]) if "size" in frame else -1
        rgb = decode_png(
            read_range(row["path"], int(row["offset"]) if "offset" in frame else 0, size), str(row.get("ID", row["path"]))
        )
        tile = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (192, 192), interpolation=cv2.INTER_NEAREST)
        truth = [SHORT_NAMES[label] for label in LABELS if frame[label].iloc[index] == 1] or ["none"]
        predicted = [
            f"{SHORT_NAMES[label]} {probabilities[index, k]:.2f}"
            for k, label in enumerate(LABELS)
            if probabilities[index, k] >= threshold
        ] or ["none"]
        cv2.putText(tile, "T: " + " ".join(truth), (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(
            tile, "P: " + " ".join(predicted)[:40], (4, 186), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1, cv2.LINE_AA
        )
        tiles.append(tile)
    columns = 4
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    return cv2.cvtColor(grid, cv2.COLOR_BGR2RGB)
