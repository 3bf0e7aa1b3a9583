"""What the `ich predict` report is made of, gathered while predictions stream in: the series shown in full (a
bounded heap of the highest series P(any)), their thumbnails, and Grad-CAM overlays from any :class:`Explains`.
:mod:`ich.reports.predict_page` turns it into the page."""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
import pandas as pd

from ich.core.labels import ANY, LABELS

__all__ = ["Explains", "ModelInputs", "explanation_name", "encode_image", "SeriesView", "ReportCollector"]

logger = logging.getLogger("ich")

ANY_INDEX = LABELS.index(ANY)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*")
THUMBNAIL_SIDE = 96
OVERLAY_SIDE = 256
CHART_SCALE = 1.25
QUARANTINE_ROWS = 200  # rows of the quarantine shown in the page (all are in quarantine.csv)


class Explains(Protocol):
    """Where the Grad-CAM overlays come from (``ich.inference.explain.Explainer`` is one).

    ``heatmaps(inputs, label)``: the model's inputs ``(N, S, S, C)`` -> ``(N, S, S)`` float maps in [0, 1] for
    ``label``; ``overlay(image, heatmap)``: a ``(H, W, 3)`` uint8 RGB slice and its ``(H, W)`` map -> ``(H, W, 3)`` uint8.
    """

    @property
    def heatmaps(self) -> Callable[[np.ndarray, str], np.ndarray]: ...

    @property
    def overlay(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]: ...


class ModelInputs(Protocol):
    """What the report needs of a model: the inputs its explainer takes for a series' slices."""

    def model_inputs(self, images: np.ndarray, series: np.ndarray, z: np.ndarray, ids: Sequence[str]) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 slices of one series in z order (UIDs, z in mm, IDs) -> the model's inputs for them."""
        ...


def explanation_name(image_id: str, label: str) -> str:
    """``<ID>_<label>.png`` for an image ID that is a safe file name (an RSNA ID or a DICOM UID); raises
    ``ValueError`` for anything else, so no other text becomes a path."""
    if label not in LABELS or not isinstance(image_id, str) or not _SAFE_NAME.fullmatch(image_id) or len(image_id) > 64:
        raise ValueError(f"Not a safe image ID and label for a file name: {image_id!r}, {label!r}")
    return f"{image_id}_{label}.png"


def encode_image(rgb: np.ndarray, extension: str, side: int | None = None, *options: int) -> bytes:
    """``(H, W, 3)`` uint8 RGB as ``.jpg`` or ``.png`` bytes, shrunk to ``side`` x ``side`` when larger."""
    if side is not None and rgb.shape[0] > side:
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(extension, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), list(options))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {extension} image of shape {rgb.shape}")
    return buffer.tobytes()


@dataclass
class SeriesView:
    """What the report keeps of one series: its slices in z order (``ids``, ``z`` in mm, ``probabilities``
    ``(N, 6)``, ``flags`` ``(N, 6)`` bool, JPEG ``thumbnails`` of 96 px) and its Grad-CAM ``overlays`` as PNG
    bytes by (image ID, label). About 5 kB per slice."""

    series_uid: str
    ids: list[str]
    z: np.ndarray
    probabilities: np.ndarray
    flags: np.ndarray
    thumbnails: list[bytes]
    overlays: dict[tuple[str, str], bytes] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """The series P(any): the highest of its slices."""
        return float(self.probabilities[:, ANY_INDEX].max())


class ReportCollector:
    """Keeps, while chunks of predictions stream in (:meth:`add`), the ``max_series`` series with the highest P(any),
    with their thumbnails and (with an ``explainer``) Grad-CAM overlays of up to ``explain_slices`` flagged slices.

    ``model`` is used only for :meth:`ModelInputs.model_inputs`, when there is an explainer.
    """

    def __init__(
        self,
        model: ModelInputs,
        thresholds: Mapping[str, float],
        max_series: int,
        explain_slices: int,
        explainer: Explains | None,
    ) -> None:
        self.model, self.thresholds = model, dict(thresholds)
        self.max_series, self.explain_slices, self.explainer = max_series, explain_slices, explainer
        self.explain_error: str | None = None
        self._heap: list[tuple[float, int, SeriesView]] = []
        self._seen = 0

    def add(self, frame: pd.DataFrame, images: np.ndarray) -> None:
        """Consider every series of a chunk: ``frame`` has ``ID``, ``SeriesInstanceUID``, ``position_z`` and the label
        columns, one row per image of ``images`` ``(N, S, S, 3)`` uint8, whole series, each series' rows in z order
        (as ``ich.inference.predict.predict_files`` delivers them)."""
        if self.max_series == 0:
            return
        cut = np.array([self.thresholds[label] for label in LABELS])
        for series_uid, rows in frame.groupby("SeriesInstanceUID", sort=False).indices.items():
            self._seen += 1
            ordered = np.sort(np.asarray(rows))
            probabilities = frame[list(LABELS)].to_numpy(dtype=np.float64)[ordered]
            key = (float(probabilities[:, ANY_INDEX].max()), -self._seen)
            if len(self._heap) >= self.max_series and key <= self._heap[0][:2]:
                continue
            view = SeriesView(
                series_uid=str(series_uid),
                ids=[str(value) for value in frame["ID"].to_numpy()[ordered]],
                z=frame["position_z"].to_numpy(dtype=np.float64)[ordered],
                probabilities=probabilities,
                flags=probabilities >= cut,
                thumbnails=[encode_image(images[row], ".jpg", THUMBNAIL_SIDE, cv2.IMWRITE_JPEG_QUALITY, 90) for row in ordered],
            )
            if self.explainer is not None and self.explain_slices > 0:
                self._explain(self.explainer, view, frame, images, ordered)
            if len(self._heap) >= self.max_series:
                heapq.heapreplace(self._heap, (*key, view))
            else:
                heapq.heappush(self._heap, (*key, view))

    def _explain(
        self, explainer: Explains, view: SeriesView, frame: pd.DataFrame, images: np.ndarray, ordered: np.ndarray
    ) -> None:
        flagged = np.flatnonzero(view.flags.any(axis=1))
        if not len(flagged):
            return
        chosen = flagged[np.argsort(-view.probabilities[flagged, ANY_INDEX], kind="stable")[: self.explain_slices]]
        inputs = self.model.model_inputs(images[ordered], frame["SeriesInstanceUID"].to_numpy()[ordered], view.z, view.ids)
        try:
            for label_index, label in enumerate(LABELS):
                rows = [place for place in chosen if view.flags[place, label_index]]
                if not rows:
                    continue
                maps = np.asarray(explainer.heatmaps(inputs[rows], label))
                for place, heatmap in zip(rows, maps):
                    picture = explainer.overlay(images[ordered[place]], heatmap)
                    view.overlays[(view.ids[place], label)] = encode_image(picture, ".png", OVERLAY_SIDE)
        except Exception as error:  # an explanation must not cost the predictions of the whole run
            self.explain_error = f"{type(error).__name__}: {error}"
            logger.warning("predict: Grad-CAM failed (%s); the report goes on without overlays", self.explain_error)
            self.explainer = None

    def series(self) -> list[SeriesView]:
        """The kept series, highest P(any) first (ties: the series predicted first)."""
        return [view for _, _, view in sorted(self._heap, key=lambda item: (-item[0], -item[1]))]


# ------------------------------------------------------------------------------------ what the template shows
