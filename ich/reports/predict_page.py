"""The report of `ich predict`: one self-contained, offline HTML page, and the Grad-CAM overlays as PNGs.

Per series shown: a strip of its slices in z order (thumbnails of the windowed RGB slice the model saw: blood
window red, brain green, bone blue) with the labels flagged on each slice marked, the six probabilities along z
as a chart (Vega-Lite rendered to PNG by vl-convert, as :mod:`ich.reports.evaluation_page` does), and Grad-CAM overlays of its
flagged slices. Every image is a ``data:`` URI; the page loads nothing and links nowhere.

A whole test set has thousands of series, so the report shows in full the ``max_series`` with the highest
series P(any) (kept while predictions stream in, a bounded heap), and every series in its table. Grad-CAM maps
are made for those series only, for at most ``explain_slices`` flagged slices each (the highest P(any) first),
one per label flagged on the slice, and saved as ``explanations/<ID>_<label>.png``.
"""

from __future__ import annotations

import base64
import heapq
import html
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from ich.data.context import series_order
from ich.core.files import atomic_write_bytes, atomic_write_text
from ich.core.labels import ANY, LABELS
from ich.reports.evaluation_page import LABEL_COLORS, render_png

if TYPE_CHECKING:
    from ich.inference.loading import LoadedModel

__all__ = [
    "LABEL_ABBREVIATIONS",
    "Explainer",
    "gradcam_explainer",
    "explanation_name",
    "SeriesView",
    "ReportCollector",
    "probability_chart_spec",
    "predict_report_html",
    "write_predict_report",
]

logger = logging.getLogger("ich")

#: Short names of the labels on thumbnails (the usual radiology abbreviations).
LABEL_ABBREVIATIONS: dict[str, str] = {
    "any": "ICH",
    "epidural": "EDH",
    "intraparenchymal": "IPH",
    "intraventricular": "IVH",
    "subarachnoid": "SAH",
    "subdural": "SDH",
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]*")
_THUMBNAIL_SIDE = 96
_OVERLAY_SIDE = 256
_CHART_SCALE = 1.25
_QUARANTINE_ROWS = 200  # rows of the quarantine shown in the page (all are in quarantine.csv)


@dataclass(frozen=True)
class Explainer:
    """Where the Grad-CAM overlays come from. ``heatmaps(inputs, label)``: the model's inputs ``(N, S, S, 3)``
    (:meth:`ich.inference.loading.LoadedModel.model_inputs`) -> ``(N, S, S)`` float maps in [0, 1] for ``label``;
    ``overlay(image, heatmap)``: a ``(H, W, 3)`` uint8 RGB slice and its ``(H, W)`` map -> ``(H, W, 3)`` uint8."""

    heatmaps: Callable[[np.ndarray, str], np.ndarray]
    overlay: Callable[[np.ndarray, np.ndarray], np.ndarray]


def gradcam_explainer(model: LoadedModel) -> Explainer:
    """Grad-CAM of ``model`` (:func:`ich.inference.explain.gradcam`, drawn with :func:`ich.inference.explain.overlay`)."""
    from ich.inference import explain  # imported here: it builds on TensorFlow, which a report without maps does not need

    return Explainer(lambda inputs, label: explain.gradcam(model, inputs, label), explain.overlay)


def explanation_name(image_id: str, label: str) -> str:
    """``<ID>_<label>.png`` for an image ID that is a safe file name (an RSNA ID or a DICOM UID); raises
    ``ValueError`` for anything else, so no other text becomes a path."""
    if label not in LABELS or not isinstance(image_id, str) or not _SAFE_NAME.fullmatch(image_id) or len(image_id) > 64:
        raise ValueError(f"Not a safe image ID and label for a file name: {image_id!r}, {label!r}")
    return f"{image_id}_{label}.png"


def _jpeg(rgb: np.ndarray, side: int) -> bytes:
    if rgb.shape[0] > side:
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buffer.tobytes()


def _png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buffer.tobytes()


@dataclass
class SeriesView:
    """What the report keeps of one series: its slices in z order (``ids``, ``z`` in mm, ``probabilities``
    ``(N, 6)``, ``flags`` ``(N, 6)`` bool, JPEG ``thumbnails``) and its Grad-CAM ``overlays`` as PNG bytes by
    (image ID, label)."""

    series_uid: str
    ids: list[str]
    z: np.ndarray
    probabilities: np.ndarray
    flags: np.ndarray
    thumbnails: list[bytes]
    overlays: dict[tuple[str, str], bytes] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(self.probabilities[:, LABELS.index(ANY)].max())


class ReportCollector:
    """Keeps, while chunks of predictions stream in (:meth:`add`), the ``max_series`` series with the highest P(any),
    with their thumbnails and (with an ``explainer``) Grad-CAM overlays of up to ``explain_slices`` flagged slices."""

    def __init__(self, model: LoadedModel, thresholds: Mapping[str, float], max_series: int, explain_slices: int,
                 explainer: Explainer | None) -> None:
        self.model, self.thresholds = model, dict(thresholds)
        self.max_series, self.explain_slices, self.explainer = max_series, explain_slices, explainer
        self.explain_error: str | None = None
        self._heap: list[tuple[float, int, SeriesView]] = []
        self._seen = 0

    def add(self, frame: pd.DataFrame, images: np.ndarray) -> None:
        """Consider every series of a chunk: ``frame`` has ``ID``, ``SeriesInstanceUID``, ``position_z`` and the label
        columns, one row per image of ``images`` ``(N, S, S, 3)`` uint8, whole series."""
        if self.max_series == 0:
            return
        cut = np.array([self.thresholds[label] for label in LABELS])
        for series_uid, rows in frame.groupby("SeriesInstanceUID", sort=False).indices.items():
            self._seen += 1
            rows = np.asarray(rows)
            ordered = rows[series_order([series_uid] * len(rows), frame["position_z"].to_numpy()[rows], frame["ID"].to_numpy()[rows])]
            probabilities = frame[list(LABELS)].to_numpy(dtype=np.float64)[ordered]
            key = (float(probabilities[:, 0].max()), -self._seen)
            if len(self._heap) >= self.max_series and key <= self._heap[0][:2]:
                continue
            view = SeriesView(
                series_uid=str(series_uid),
                ids=[str(value) for value in frame["ID"].to_numpy()[ordered]],
                z=frame["position_z"].to_numpy(dtype=np.float64)[ordered],
                probabilities=probabilities,
                flags=probabilities >= cut,
                thumbnails=[_jpeg(images[row], _THUMBNAIL_SIDE) for row in ordered],
            )
            if self.explainer is not None and self.explain_slices > 0:
                self._explain(view, frame, images, ordered)
            if len(self._heap) >= self.max_series:
                heapq.heapreplace(self._heap, (*key, view))
            else:
                heapq.heappush(self._heap, (*key, view))

    def _explain(self, view: SeriesView, frame: pd.DataFrame, images: np.ndarray, ordered: np.ndarray) -> None:
        flagged = np.flatnonzero(view.flags.any(axis=1))
        if not len(flagged):
            return
        chosen = flagged[np.argsort(-view.probabilities[flagged, 0], kind="stable")[: self.explain_slices]]
        inputs = self.model.model_inputs(
            images[ordered], frame["SeriesInstanceUID"].to_numpy()[ordered], view.z, view.ids
        )
        try:
            for label_index, label in enumerate(LABELS):
                rows = [place for place in chosen if view.flags[place, label_index]]
                if not rows:
                    continue
                maps = np.asarray(self.explainer.heatmaps(inputs[rows], label))  # type: ignore[union-attr]
                for place, heatmap in zip(rows, maps):
                    image = images[ordered[place]]
                    picture = self.explainer.overlay(image, heatmap)  # type: ignore[union-attr]
                    if picture.shape[0] > _OVERLAY_SIDE:
                        picture = cv2.resize(picture, (_OVERLAY_SIDE, _OVERLAY_SIDE), interpolation=cv2.INTER_AREA)
                    view.overlays[(view.ids[place], label)] = _png(picture)
        except Exception as error:  # an explanation must not cost the predictions of the whole run
            self.explain_error = f"{type(error).__name__}: {error}"
            logger.warning("predict: Grad-CAM failed (%s); the report goes on without overlays", self.explain_error)
            self.explainer = None

    def series(self) -> list[SeriesView]:
        """The kept series, highest P(any) first (ties: the series predicted first)."""
        return [view for _, _, view in sorted(self._heap, key=lambda item: (-item[0], -item[1]))]


def probability_chart_spec(z: np.ndarray, probabilities: np.ndarray, thresholds: Mapping[str, float], title: str = "") -> dict:
    """A Vega-Lite line chart of the six probabilities of a series along z (mm; the slice's place in the series
    when any position is unknown), each label's threshold a dashed rule in its colour."""
    z = np.asarray(z, dtype=np.float64)
    by_position = bool(len(z)) and bool(np.isfinite(z).all())
    x_values = z if by_position else np.arange(len(z), dtype=np.float64)
    values = [
        {"x": round(float(x_values[row]), 4), "label": label, "p": round(float(probabilities[row, index]), 6)}
        for row in range(len(z))
        for index, label in enumerate(LABELS)
    ]
    rules = [{"label": label, "threshold": round(float(thresholds[label]), 6)} for label in LABELS]
    color = {"field": "label", "type": "nominal", "title": None, "sort": list(LABELS),
             "scale": {"domain": list(LABELS), "range": [LABEL_COLORS[label] for label in LABELS]},
             "legend": {"orient": "right"}}
    x_title = "slice position z (mm)" if by_position else "slice (z order)"
    return {
        "title": {"text": title, "subtitle": "probability per label along z; dashed: each label's threshold"} if title else None,
        "width": 560,
        "height": 170,
        "layer": [
            {
                "data": {"values": rules},
                "mark": {"type": "rule", "strokeDash": [4, 4], "strokeWidth": 1, "opacity": 0.6},
                "encoding": {"y": {"field": "threshold", "type": "quantitative"}, "color": color},
            },
            {
                "data": {"values": values},
                "mark": {"type": "line", "point": {"size": 18}, "strokeWidth": 1.5},
                "encoding": {
                    "x": {"field": "x", "type": "quantitative", "title": x_title, "scale": {"zero": False}},
                    "y": {"field": "p", "type": "quantitative", "title": "probability", "scale": {"domain": [0, 1]}},
                    "color": color,
                },
            },
        ],
        "config": {"background": "white", "font": "DejaVu Sans, Liberation Sans, Arial, sans-serif", "view": {"stroke": "#bbbbbb"}},
    }


def _data_uri(data: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


_CSS = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 2em auto; max-width: 1400px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; margin: 1.8em 0 0.4em; font-family: monospace; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; text-align: right; }
th[scope=row], td.text, thead th:first-child { text-align: left; font-family: monospace; }
thead th { background: #f3f3f3; }
td.flagged { background: #fde2d6; font-weight: bold; }
.warning { color: #8a1c00; }
.strip { display: flex; flex-wrap: wrap; gap: 4px; margin: 0.5em 0; }
.slice { margin: 0; text-align: center; font-size: 0.7em; width: 100px; }
.slice img { border: 3px solid #ccc; display: block; margin: 0 auto; image-rendering: pixelated; }
.slice.flagged img { border-color: #d00; }
.badge { display: inline-block; color: white; border-radius: 3px; padding: 0 3px; margin: 1px; font-weight: bold; }
.overlays { display: flex; flex-wrap: wrap; gap: 10px; }
.overlays figure { margin: 0; font-size: 0.8em; text-align: center; }
figcaption { color: #555; }
""".strip()


def _badges(flags: np.ndarray) -> str:
    return "".join(
        f'<span class="badge" style="background:{LABEL_COLORS[label]}" title="{label}">{LABEL_ABBREVIATIONS[label]}</span>'
        for index, label in enumerate(LABELS)
        if flags[index]
    )


def _series_section(number: int, view: SeriesView, thresholds: Mapping[str, float], chart_png: bytes) -> str:
    flagged = [label for index, label in enumerate(LABELS) if view.flags[:, index].any()]
    summary = ", ".join(f"{label} ({int(view.flags[:, LABELS.index(label)].sum())} slices)" for label in flagged) or "nothing flagged"
    parts = [
        f'<section id="series-{number}" data-series="{html.escape(view.series_uid)}">',
        f"<h3>{html.escape(view.series_uid)}</h3>",
        f"<p>{len(view.ids)} slices; P(any) of the series {_number(view.score)}; flagged: {html.escape(summary)}</p>",
        '<div class="strip">',
    ]
    for place, image_id in enumerate(view.ids):
        css = "slice flagged" if view.flags[place].any() else "slice"
        z = view.z[place]
        where = f"z {z:.1f}" if math.isfinite(z) else "z ?"
        parts.append(
            f'<figure class="{css}" data-id="{html.escape(image_id)}"><img alt="{html.escape(image_id)}" '
            f'src="{_data_uri(view.thumbnails[place], "jpeg")}" width="{_THUMBNAIL_SIDE}" height="{_THUMBNAIL_SIDE}">'
            f"<figcaption>{where}<br>P(any) {_number(view.probabilities[place, 0], 2)}<br>{_badges(view.flags[place])}</figcaption></figure>"
        )
    parts.append("</div>")
    parts.append(f'<img class="chart" alt="probabilities along z" src="{_data_uri(chart_png, "png")}">')
    if view.overlays:
        parts.append('<div class="overlays">')
        for (image_id, label), png in view.overlays.items():
            place = view.ids.index(image_id)
            probability = view.probabilities[place, LABELS.index(label)]
            parts.append(
                f'<figure data-id="{html.escape(image_id)}" data-label="{label}"><img alt="Grad-CAM {label}" src="{_data_uri(png, "png")}">'
                f"<figcaption>{html.escape(image_id)}<br>Grad-CAM: {label}, p {_number(probability, 2)} "
                f"(threshold {_number(thresholds[label], 2)})</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _series_rows(series: pd.DataFrame, anchors: Mapping[str, int]) -> str:
    header = "".join(f"<th>{label}</th>" for label in LABELS)
    rows = []
    for record in series.itertuples(index=False):
        uid = str(record.SeriesInstanceUID)
        name = html.escape(uid)
        if uid in anchors:
            name = f'<a href="#series-{anchors[uid]}">{name}</a>'
        cells = []
        for label in LABELS:
            count = int(getattr(record, f"{label}_flagged"))
            text = _number(float(getattr(record, label)))
            cells.append(f'<td class="flagged">{text} ({count})</td>' if count else f"<td>{text}</td>")
        rows.append(f'<tr><td class="text">{name}</td><td>{int(record.slices)}</td>{"".join(cells)}</tr>')
    return (
        f"<table><thead><tr><th>series</th><th>slices</th>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def predict_report_html(
    views: Sequence[SeriesView],
    charts: Sequence[bytes],
    series: pd.DataFrame,
    quarantine: pd.DataFrame,
    thresholds: Mapping[str, float],
    summary: Mapping[str, object],
    notes: Sequence[str] = (),
) -> str:
    """The page: the run's figures, thresholds, every series' scores, the series in ``views`` in full (``charts``
    their PNG charts, same order) and the quarantine. All text is escaped; images are data URIs."""
    anchors = {view.series_uid: number for number, view in enumerate(views)}
    settings = [
        ("images predicted", summary.get("images_predicted")),
        ("series", summary.get("series")),
        ("files quarantined", summary.get("quarantined")),
        ("model", f"{summary.get('arch')} at {summary.get('image_size')} px" + (", with the sequence model" if summary.get("sequence_model") else "")),
        ("test-time augmentation", "horizontal flip" if summary.get("tta") else "off"),
        ("thresholds", summary.get("thresholds_from")),
    ]
    parts = [
        f"<h1>ICH predictions: {int(summary.get('images_predicted', 0))} images in {int(summary.get('series', 0))} series</h1>",  # type: ignore[call-overload]
        '<p class="warning">Research use only; not for clinical use.</p>',
        "<table><tbody>" + "".join(f'<tr><th scope="row">{html.escape(name)}</th><td class="text">{html.escape(str(value))}</td></tr>' for name, value in settings) + "</tbody></table>",
        "<table><thead><tr><th>label</th>" + "".join(f"<th>{label}</th>" for label in LABELS) + "</tr></thead><tbody><tr><th scope=\"row\">threshold</th>"
        + "".join(f"<td>{_number(thresholds[label])}</td>" for label in LABELS) + "</tr></tbody></table>",
    ]
    parts += [f'<p class="warning">{html.escape(note)}</p>' for note in notes]
    parts.append("<h2>Series</h2>")
    parts.append(
        "<p>Per label: the series score (the highest probability of its slices) and, in brackets, how many slices reach the "
        f"label's threshold. {len(views)} of {len(series)} series are shown in full below (highest P(any) first).</p>"
    )
    parts.append(_series_rows(series, anchors))
    if views:
        parts.append("<h2>Series in detail</h2>")
        parts.append(
            "<p>Slices in z order, as the model saw them (blood window red, brain green, bone blue); a red frame marks a "
            "slice with a flagged label, the badges which: "
            + ", ".join(f"{LABEL_ABBREVIATIONS[label]} {label}" for label in LABELS)
            + ". Grad-CAM overlays show where the network looked for the flagged label.</p>"
        )
        parts += [_series_section(number, view, thresholds, chart) for number, (view, chart) in enumerate(zip(views, charts))]
    parts.append("<h2>Quarantine</h2>")
    if quarantine.empty:
        parts.append("<p>Every file could be used.</p>")
    else:
        shown = quarantine.head(_QUARANTINE_ROWS)
        parts.append(f"<p>{len(quarantine)} files could not be used; they are not in slices.csv or submission.csv. "
                     f"{'The first ' + str(len(shown)) + ' are listed; all' if len(shown) < len(quarantine) else 'All'} are in quarantine.csv.</p>")
        body = "".join(
            f'<tr><td class="text">{html.escape(str(row.ID))}</td><td class="text">{html.escape(str(row.file))}</td><td class="text">{html.escape(str(row.reason))}</td></tr>'
            for row in shown.itertuples(index=False)
        )
        parts.append(f"<table><thead><tr><th>ID</th><th>file</th><th>reason</th></tr></thead><tbody>{body}</tbody></table>")
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>ICH predictions</title>\n"
        f"<style>\n{_CSS}\n</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _write_explanations(out: Path, views: Sequence[SeriesView]) -> int:
    """Replace ``out/explanations/`` with one PNG per overlay; returns how many."""
    staging = Path(tempfile.mkdtemp(prefix=".explanations-", dir=out))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the finished folder gets the usual mode
    count = 0
    try:
        for view in views:
            for (image_id, label), png in view.overlays.items():
                atomic_write_bytes(staging / explanation_name(image_id, label), png)
                count += 1
        target = out / "explanations"
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return count


def write_predict_report(out: Path, collector: ReportCollector, series: pd.DataFrame, quarantine: pd.DataFrame,
                         thresholds: Mapping[str, float], summary: dict[str, object]) -> Path:
    """Write ``out/report.html`` and ``out/explanations/``; adds ``explanation_images`` to ``summary``.

    Args:
        series: the table of ``series.csv`` (:func:`ich.inference.predict.series_table`); quarantine: ``ID,reason,file``.
    """
    views = collector.series()
    charts = [render_png(probability_chart_spec(view.z, view.probabilities, thresholds), scale=_CHART_SCALE) for view in views]
    notes = []
    if collector.explain_error:
        notes.append(f"Grad-CAM failed and was turned off: {collector.explain_error}")
    elif not summary.get("explanations"):
        notes.append("No Grad-CAM overlays in this report (turned off with --no-explain, --explain-slices 0 or --report-series 0).")
    summary["explanation_images"] = _write_explanations(out, views)
    page = predict_report_html(views, charts, series, quarantine, thresholds, summary, notes)
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
