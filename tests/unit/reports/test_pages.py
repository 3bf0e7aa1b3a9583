"""The two report pages share one jinja2 base, one stylesheet and one formatter per kind of number; every
text is escaped; and the reports layer reads no model, training or data code."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import cv2
import jinja2
import numpy as np
import pandas as pd
import pytest

from harness.project import ROOT
from ich.core.labels import LABELS
from ich.reports import formatting
from ich.reports.evaluation_page import report_html
from ich.reports.predict_page import ReportCollector, SeriesView, predict_report_html, write_predict_report
from ich.reports.templating import environment

HOSTILE = "<script>alert('x')</script>"
THRESHOLDS = {label: 0.5 for label in LABELS}


def _png(side: int = 8) -> bytes:
    return cv2.imencode(".png", np.full((side, side, 3), 200, np.uint8))[1].tobytes()


def _view(series_uid: str, ids: list[str], z: list[float], p_any: list[float]) -> SeriesView:
    probabilities = np.zeros((len(ids), len(LABELS)))
    probabilities[:, 0] = p_any
    return SeriesView(
        series_uid, ids, np.array(z, dtype=float), probabilities, probabilities >= 0.5, [b"\xff\xd8jpeg"] * len(ids)
    )


def _series_table(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    table = pd.DataFrame({"SeriesInstanceUID": [row[0] for row in rows], "slices": [row[1] for row in rows]})
    for label in LABELS:
        table[label] = [row[2] if label == "any" else 0.0 for row in rows]
        table[f"{label}_flagged"] = [int(row[2] >= 0.5) if label == "any" else 0 for row in rows]
    return table


def predict_page(
    series_uid: str = "1.2.3",
    image_id: str = "ID_0a",
    z: float = 12.0,
    score: float = 0.75,
    quarantine_reason: str = "pixel data truncated",
) -> str:
    view = _view(series_uid, [image_id, "ID_0b"], [z, z + 5], [score, 0.25])
    quarantine = pd.DataFrame({"ID": ["ID_ff"], "reason": [quarantine_reason], "file": ["a/broken.dcm"]})
    summary = {
        "images_predicted": 2,
        "series": 1,
        "quarantined": 1,
        "arch": "convnext",
        "image_size": 32,
        "tta": False,
        "sequence_model": False,
        "thresholds_from": "model card",
    }
    return predict_report_html([view], [_png()], _series_table([(series_uid, 2, score)]), quarantine, THRESHOLDS, summary)


def evaluation_page(title: str = "ICH evaluation", auc: float | None = 0.9) -> str:
    summary = {
        "any": {"auc": auc, "auc_ci95": [0.8, 0.95] if auc is not None else None, "positives": 3},
        "weighted_log_loss": 0.25,
    }
    return report_html({"roc": _png(16)}, title, summary)


# ----------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("probability", 0.12345, "0.123"),
        ("probability", 1, "1.000"),
        ("metric", 0.9996, "1.000"),
        ("loss", 0.081234, "0.0812"),
        ("millimetres", -12.25, "-12.2"),
        ("count", 40, "40"),
        ("count", np.int64(7), "7"),
        ("count", 3.0, "3"),
        ("interval", [0.95, 0.99], "[0.950, 0.990]"),
        ("interval", (np.float64(0.1), 0.2), "[0.100, 0.200]"),
        *[
            (kind, missing, "–")
            for kind in ("probability", "metric", "loss", "millimetres", "count", "interval")
            for missing in (None, math.nan, math.inf)
        ],
        ("interval", [0.1, None], "–"),
        ("interval", [0.1], "–"),
        ("interval", "ab", "–"),
    ],
)
def test_one_formatter_per_kind_and_missing_is_a_dash(kind, value, expected):
    assert formatting.formatted(value, kind) == expected


def test_formatters_reject_an_unknown_kind_and_embed_bytes():
    with pytest.raises(
        ValueError, match="kind must be one of probability, metric, loss, millimetres, count, interval. Received: 'auc'"
    ):
        formatting.formatted(0.5, "auc")
    assert formatting.data_uri(b"\x89PNG", "image/png") == "data:image/png;base64,iVBORw=="  # base64 of 89 50 4E 47


# --------------------------------------------------------------------------------------------- the pages
def test_both_pages_share_the_base_and_its_one_stylesheet():
    stylesheet = Path(ROOT / "ich/reports/templates/style.css").read_text(encoding="utf-8")
    for page in (evaluation_page(), predict_page()):
        assert page.startswith('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">')
        assert page.count("<style>") == 1 and stylesheet.strip() in page
        assert page.count("Research use only; not for clinical use.") == 2  # header and footer
        assert "<link" not in page and "<script" not in page and "http" not in page
        assert page.endswith("</html>\n")


def test_a_missing_number_reads_as_a_dash_on_both_pages():
    evaluation = evaluation_page(auc=None)
    assert '<tr><th scope="row">any</th><td>3</td><td>–</td><td>–</td></tr>' in evaluation
    assert "undefined" not in evaluation
    prediction = predict_page(z=math.nan, score=math.nan)
    assert "<td>–</td>" in prediction  # the series' NaN score in the table
    assert "P(any) of the series –" in prediction  # and in its section
    assert "z –<br>" in prediction  # the unknown position of a slice
    assert "undefined" not in prediction and ">nan<" not in prediction.lower()


def test_text_is_escaped_on_both_pages():
    evaluation = evaluation_page(title=f"run {HOSTILE}")
    assert HOSTILE not in evaluation and "<title>run &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</title>" in evaluation
    prediction = predict_page(series_uid=HOSTILE, image_id=f'ID"{HOSTILE}', quarantine_reason=HOSTILE)
    assert "<script" not in prediction
    # the series UID in the table, data-series and heading; the slice ID in its anchor, data-id and alt; the
    # quarantine reason
    assert prediction.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") == 7
    assert 'data-series="&lt;script&gt;' in prediction and 'data-id="ID&#34;&lt;script&gt;' in prediction
    assert f'<td class="text">{HOSTILE}</td>' not in prediction


def test_the_environment_is_strict_and_escapes_by_default():
    env = environment()
    assert env.autoescape is not False and env.keep_trailing_newline
    with pytest.raises(jinja2.UndefinedError, match="'label_rows' is undefined"):
        env.get_template("evaluation.html").render(title="t", heading="t")
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"


def test_predict_page_structure_the_tests_of_ich_predict_read():
    page = predict_page()
    strip = page.split('<div class="strip">', 1)[1].split("</div>", 1)[0]
    assert re.findall(r'data-id="([^"]+)"', strip) == ["ID_0a", "ID_0b"]
    assert page.count('src="data:image/jpeg;base64,') == 2 and page.count('src="data:image/png;base64,') == 1
    assert '<a href="#series-0">1.2.3</a>' in page and '<section id="series-0" data-series="1.2.3">' in page
    assert "<h1>ICH predictions: 2 images in 1 series</h1>" in page and "<title>ICH predictions</title>" in page
    assert '<td class="flagged">0.750 (1)</td>' in page and "1 files could not be used" in page


def test_predict_page_warns_of_series_outside_the_training_data_in_a_banner_and_marks_them():
    views = [_view("1.2.3", ["ID_0a"], [0.0], [0.75]), _view("1.2.4", ["ID_0b"], [0.0], [0.25])]
    table = _series_table([("1.2.3", 1, 0.75), ("1.2.4", 1, 0.25), ("1.2.5", 1, 0.1)])
    quarantine = pd.DataFrame(columns=["ID", "reason", "file"])
    plain = predict_report_html(views, [_png(), _png()], table, quarantine, THRESHOLDS, {})
    assert 'class="banner' not in plain and 'class="ood-mark"' not in plain and "data-ood" not in plain
    banner = f"2 of 3 series lie outside the training data {HOSTILE}"
    page = predict_report_html(views, [_png(), _png()], table, quarantine, THRESHOLDS, {}, (), ["1.2.4", "1.2.5"], banner)
    body = page.split("</style>", 1)[1]
    assert '<p class="banner ood" role="alert">2 of 3 series lie outside the training data &lt;script&gt;' in body
    assert HOSTILE not in body
    assert body.index('class="banner ood"') < body.index('<table class="settings">')  # at the top of the page
    # marked in the table (a shown series and one in the table only) and in the shown series' section
    assert body.count('<span class="ood-mark">outside training data</span>') == 2 + 1 + 1  # table x2, section, legend
    assert '<section id="series-1" data-series="1.2.4" data-ood="true">' in body
    assert '<section id="series-0" data-series="1.2.3">' in body


def test_predict_page_lists_the_key_slices_of_series_csv_linked_to_their_thumbnails():
    view = _view("1.2.3", ["ID_0a", "ID_0b", "ID_0c"], [0.0, 5.0, 10.0], [0.2, 0.75, 0.4])
    table = _series_table([("1.2.3", 3, 0.75)])
    quarantine = pd.DataFrame(columns=["ID", "reason", "file"])
    assert '<table class="key-slices">' not in predict_report_html([view], [_png()], table, quarantine, THRESHOLDS, {})
    table["any_key_slices"] = ["ID_0b ID_0c ID_gone"]  # an ID the series shown lacks is left out
    table["epidural_key_slices"] = [""]  # a label without key slices has no row
    page = predict_report_html([view], [_png()], table, quarantine, THRESHOLDS, {})
    keys = page.split('<table class="key-slices">', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'<th scope="row">([a-z]+)</th>', keys) == ["any"]
    assert re.findall(r'href="#slice-([^"]+)"', keys) == ["ID_0b", "ID_0c"]
    assert '<strong><a class="id" href="#slice-ID_0b">ID_0b</a> (p 0.750, z 5.0 mm)</strong>' in keys  # >= 0.5
    assert '; <a class="id" href="#slice-ID_0c">ID_0c</a> (p 0.400, z 10.0 mm)</td>' in keys  # below: not bold
    assert all(f'id="slice-{image_id}"' in page for image_id in ("ID_0a", "ID_0b", "ID_0c"))


# ------------------------------------------------------------------------------------------ the collector
class _Model:
    """Stands in for a loaded model: what ReportCollector uses of it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def model_inputs(self, images, series, z, ids):
        self.calls.append(list(ids))
        return np.asarray(images, dtype=np.float32)


class _Explainer:
    heatmaps = staticmethod(lambda inputs, label: np.asarray(inputs)[..., 0] / 255.0)
    overlay = staticmethod(lambda image, heatmap: np.clip(image * 0.5 + heatmap[..., None] * 100, 0, 255).astype(np.uint8))


def test_collector_keeps_the_top_series_and_explains_flagged_slices_with_any_explainer(tmp_path):
    frame = pd.DataFrame(
        {
            "ID": ["ID_a1", "ID_a2", "ID_b1", "ID_c1", "ID_c2"],
            "SeriesInstanceUID": ["A", "A", "B", "C", "C"],
            "position_z": [1.0, 2.0, 0.0, 5.0, 6.0],
            **{label: [0.2, 0.9, 0.1, 0.6, 0.3] if label == "any" else [0.0] * 5 for label in LABELS},
        }
    )
    images = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    model = _Model()
    collector = ReportCollector(model, THRESHOLDS, max_series=2, explain_slices=1, explainer=_Explainer())
    collector.add(frame, images)
    kept = collector.series()
    assert [view.series_uid for view in kept] == ["A", "C"]  # P(any) 0.9 and 0.6; B (0.1) dropped
    assert kept[0].ids == ["ID_a1", "ID_a2"] and kept[0].score == 0.9
    assert list(kept[0].overlays) == [("ID_a2", "any")] and list(kept[1].overlays) == [("ID_c1", "any")]
    assert model.calls == [["ID_a1", "ID_a2"], ["ID_c1", "ID_c2"]]  # B has no flagged slice: no inputs made
    summary = {"images_predicted": 5, "series": 3, "quarantined": 0, "explanations": True}
    path = write_predict_report(
        tmp_path,
        collector,
        _series_table([("A", 2, 0.9), ("B", 1, 0.1), ("C", 2, 0.6)]),
        pd.DataFrame(columns=["ID", "reason", "file"]),
        THRESHOLDS,
        summary,
    )
    page = path.read_text(encoding="utf-8")
    assert summary["explanation_images"] == 2 and sorted(p.name for p in (tmp_path / "explanations").iterdir()) == [
        "ID_a2_any.png",
        "ID_c1_any.png",
    ]
    assert page.count('data-label="any"') == 2 and "Every file could be used." in page
    assert 'model</th><td class="text">None at None px' in page  # what the summary lacks is shown as such


# --------------------------------------------------------------------------------------------- the layer
def test_the_reports_layer_imports_no_model_training_data_or_stage_code_not_even_for_types():
    forbidden = ("ich.inference", "ich.training", "ich.data", "ich.models", "stages")
    files = sorted((ROOT / "ich/reports").rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(forbidden), f"{path.relative_to(ROOT)} imports {name}"
