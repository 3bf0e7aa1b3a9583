"""The report of `ich predict`: one self-contained, offline HTML page, and the Grad-CAM overlays as PNGs.

Per series shown: a strip of its slices in z order (thumbnails of the windowed RGB slice the model saw: blood
window red, brain green, bone blue) with the labels flagged on each slice marked, the six probabilities along z
as a chart (:func:`ich.reports.charts.probability_chart_spec`), and Grad-CAM overlays of its flagged slices. The
page is the template ``predict.html`` (on ``base.html``); every image is a ``data:`` URI, and it loads nothing.

A whole test set has thousands of series, so the report shows in full the ``max_series`` with the highest
series P(any) (kept while predictions stream in, a bounded heap), and every series in its table. Each series
shown opens with its key slices (``series.csv``'s ``<label>_key_slices``, when chosen): per label, the slices of
highest probability with their probability and z, each a link to its thumbnail (``#slice-<ID>``). Grad-CAM maps
are made for those series only, for at most ``explain_slices`` flagged slices each (the highest P(any) first),
one per label flagged on the slice, and saved as ``explanations/<ID>_<label>.png``. The maps come from any
:class:`Explains` (``ich.inference.explain.gradcam_explainer`` in ``ich predict``): this layer imports no model code.

Series that lie outside the training data (``ich.inference.ood``; given as their UIDs) are marked in the table and
their sections, under a banner at the top of the page that says how many there are.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ich.core.files import atomic_write_bytes, atomic_write_text
from ich.core.labels import LABELS
from ich.reports.charts import LABEL_COLORS, probability_chart_spec, render_png
from ich.reports.formatting import MISSING, count
from ich.reports.predict_collect import (
    ANY_INDEX,
    CHART_SCALE,
    QUARANTINE_ROWS,
    THUMBNAIL_SIDE,
    Explains,
    ModelInputs,
    ReportCollector,
    SeriesView,
    explanation_name,
)
from ich.reports.templating import render_page

__all__ = [
    "LABEL_ABBREVIATIONS",
    "Explains",
    "ModelInputs",
    "explanation_name",
    "SeriesView",
    "ReportCollector",
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


@dataclass(frozen=True)
class _Cell:
    score: float
    flagged: int


@dataclass(frozen=True)
class _SeriesRow:
    series_uid: str
    anchor: int | None
    slices: int
    cells: list[_Cell]
    outside: bool = False


@dataclass(frozen=True)
class _Slice:
    image_id: str
    z: float
    p_any: float
    badges: list[str]
    thumbnail: bytes


@dataclass(frozen=True)
class _Overlay:
    image_id: str
    label: str
    probability: float
    threshold: float
    png: bytes


@dataclass(frozen=True)
class _KeySlice:
    image_id: str
    probability: float
    z: float
    flagged: bool


@dataclass(frozen=True)
class _Section:
    number: int
    series_uid: str
    score: float
    flagged: str
    slices: list[_Slice]
    chart: bytes
    overlays: list[_Overlay]
    key_slices: list[tuple[str, list[_KeySlice]]]
    outside: bool = False


def _key_slices(view: SeriesView, record: Mapping[str, object]) -> list[tuple[str, list[_KeySlice]]]:
    """Per label, its key slices as ``series.csv`` lists them (IDs separated by spaces, highest first), with their
    probability and z from the view; labels without any are left out."""
    at = {image_id: place for place, image_id in enumerate(view.ids)}
    rows = []
    for index, label in enumerate(LABELS):
        places = [at[key] for key in str(record.get(f"{label}_key_slices") or "").split() if key in at]
        if places:
            rows.append(
                (label, [_KeySlice(view.ids[p], view.probabilities[p, index], view.z[p], view.flags[p, index]) for p in places])
            )
    return rows


def _section(
    number: int,
    view: SeriesView,
    thresholds: Mapping[str, float],
    chart_png: bytes,
    record: Mapping[str, object],
    outside: bool = False,
) -> _Section:
    flagged = ", ".join(
        f"{label} ({int(view.flags[:, index].sum())} slices)" for index, label in enumerate(LABELS) if view.flags[:, index].any()
    )
    slices = [
        _Slice(
            image_id,
            float(view.z[place]),
            float(view.probabilities[place, ANY_INDEX]),
            [label for index, label in enumerate(LABELS) if view.flags[place, index]],
            view.thumbnails[place],
        )
        for place, image_id in enumerate(view.ids)
    ]
    overlays = [
        _Overlay(
            image_id, label, float(view.probabilities[view.ids.index(image_id), LABELS.index(label)]), thresholds[label], png
        )
        for (image_id, label), png in view.overlays.items()
    ]
    return _Section(number, view.series_uid, view.score, flagged, slices, chart_png, overlays, _key_slices(view, record), outside)


def _series_rows(series: pd.DataFrame, anchors: Mapping[str, int], outside: Collection[str] = ()) -> list[_SeriesRow]:
    return [
        _SeriesRow(
            str(record["SeriesInstanceUID"]),
            anchors.get(str(record["SeriesInstanceUID"])),
            int(record["slices"]),
            [_Cell(float(record[label]), int(record[f"{label}_flagged"])) for label in LABELS],
            str(record["SeriesInstanceUID"]) in outside,
        )
        for record in series.to_dict("records")
    ]


def predict_report_html(
    views: Sequence[SeriesView],
    charts: Sequence[bytes],
    series: pd.DataFrame,
    quarantine: pd.DataFrame,
    thresholds: Mapping[str, float],
    summary: Mapping[str, object],
    notes: Sequence[str] = (),
    outside: Collection[str] = (),
    banner: str | None = None,
) -> str:
    """The page: the run's figures, thresholds, every series' scores, the series in ``views`` in full (``charts``
    their PNG charts, same order) and the quarantine (``ID``, ``file``, ``reason``). All text is escaped; images
    are data URIs.

    Args:
        series: one row per series: ``SeriesInstanceUID``, ``slices``, and per label ``<label>`` (score),
            ``<label>_flagged`` (slices at or above its threshold) and ``<label>_key_slices`` (when chosen).
        summary: ``images_predicted``, ``series``, ``quarantined``, ``arch``, ``image_size``, ``sequence_model``,
            ``tta``, ``thresholds_from`` (a missing one shows as missing).
        outside: the UIDs of the series outside the training data; banner: the warning at the top of the page.
    """
    outside = frozenset(outside)
    anchors = {view.series_uid: number for number, view in enumerate(views)}
    records = {str(record["SeriesInstanceUID"]): record for record in series.to_dict("records")}
    model = f"{summary.get('arch')} at {summary.get('image_size')} px" + (
        ", with the sequence model" if summary.get("sequence_model") else ""
    )
    settings = [
        ("images predicted", count(summary.get("images_predicted"))),
        ("series", count(summary.get("series"))),
        ("files quarantined", count(summary.get("quarantined"))),
        ("model", model),
        ("test-time augmentation", "horizontal flip" if summary.get("tta") else "off"),
        ("thresholds", summary.get("thresholds_from") or MISSING),
    ]
    shown = quarantine.head(QUARANTINE_ROWS)
    return render_page(
        "predict.html",
        title="ICH predictions",
        heading=f"ICH predictions: {count(summary.get('images_predicted'))} images in {count(summary.get('series'))} series",
        settings=settings,
        labels=list(LABELS),
        thresholds=dict(thresholds),
        notes=list(notes),
        banner=banner,
        series_rows=_series_rows(series, anchors, outside),
        sections=[
            _section(number, view, thresholds, chart, records.get(view.series_uid, {}), view.series_uid in outside)
            for number, (view, chart) in enumerate(zip(views, charts))
        ],
        abbreviations=LABEL_ABBREVIATIONS,
        colors=LABEL_COLORS,
        thumbnail_side=THUMBNAIL_SIDE,
        quarantined=len(quarantine),
        quarantine_rows=[(str(row.ID), str(row.file), str(row.reason)) for row in shown.itertuples(index=False)],
    )


def _write_explanations(out: Path, views: Sequence[SeriesView]) -> int:
    """Replace ``out/explanations/`` with one PNG per overlay; returns how many."""
    staging = Path(tempfile.mkdtemp(prefix=".explanations-", dir=out))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the finished folder gets the usual mode
    written = 0
    try:
        for view in views:
            for (image_id, label), png in view.overlays.items():
                atomic_write_bytes(staging / explanation_name(image_id, label), png)
                written += 1
        target = out / "explanations"
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return written


def write_predict_report(
    out: Path,
    collector: ReportCollector,
    series: pd.DataFrame,
    quarantine: pd.DataFrame,
    thresholds: Mapping[str, float],
    summary: dict[str, object],
    outside: Collection[str] = (),
    ood_note: str | None = None,
) -> Path:
    """Write ``out/report.html`` and ``out/explanations/``; adds ``explanation_images`` to ``summary``.

    Args:
        series: the table of ``series.csv`` (``ich.inference.outputs.series_table``); quarantine: ``ID,reason,file``.
        outside: UIDs of the series outside the training data; ood_note: what the out-of-distribution check found
            (a banner at the top when ``outside`` has any, else a note).
    """
    views = collector.series()
    charts = [render_png(probability_chart_spec(view.z, view.probabilities, thresholds), scale=CHART_SCALE) for view in views]
    notes = []
    if collector.explain_error:
        notes.append(f"Grad-CAM failed and was turned off: {collector.explain_error}")
    elif not summary.get("explanations"):
        notes.append(
            "No Grad-CAM overlays in this report (turned off with --no-explain, --explain-slices 0 or --report-series 0)."
        )
    banner = ood_note if outside else None
    if ood_note and not outside:
        notes.append(ood_note)
    summary["explanation_images"] = _write_explanations(out, views)
    page = predict_report_html(views, charts, series, quarantine, thresholds, summary, notes, outside, banner)
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
