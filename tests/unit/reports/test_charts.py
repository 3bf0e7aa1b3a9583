import base64
import io
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.calibration import calibration_curve

from ich.core.labels import LABELS
from ich.reports.charts import (
    calibration_bins,
    calibration_spec,
    precision_recall_spec,
    read_training_curves,
    render_png,
    roc_spec,
    training_spec,
    training_specs,
)
from ich.reports.evaluation_page import report_html, write_report

# Four images, one label: negatives scored 0.1 and 0.4, positives 0.35 and 0.8.
HAND_TRUE = np.array([[0], [0], [1], [1]])
HAND_PROB = np.array([[0.1], [0.4], [0.35], [0.8]])


def layer_values(spec: dict, field: str) -> list[dict]:
    """The inline data rows of the layer whose x or y encodes ``field``."""
    for layer in spec["layer"]:
        encoding = layer["encoding"]
        if field in (encoding.get("x", {}).get("field"), encoding.get("y", {}).get("field")):
            return layer["data"]["values"]
    raise AssertionError(f"no layer draws {field}")


def synthetic_predictions(count: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random((count, len(LABELS))) < [0.3, 0.05, 0.1, 0.1, 0.1, 0.15]).astype(int)
    y_prob = np.clip(0.6 * y_true + rng.normal(0.2, 0.2, y_true.shape), 0, 1)
    return y_true, y_prob


def write_tsv(path, metric, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"step\t{metric}\n" + "".join(f"{step}\t{value}\n" for step, value in rows))


def tiny_dvclive(root):
    write_tsv(root / "stage1/train/loss.tsv", "loss", [(0, 0.7), (1, 0.5)])
    write_tsv(root / "stage1/eval/loss.tsv", "loss", [(0, 0.8), (1, 0.6)])
    write_tsv(root / "stage1/eval/auc.tsv", "auc", [(0, 0.55), (1, 0.75)])
    write_tsv(root / "stage2/train/auc_subdural.tsv", "auc_subdural", [(2, 0.6), (3, 0.65)])
    write_tsv(root / "stage2/eval/auc_epidural.tsv", "auc_epidural", [(2, 0.5), (3, 0.7)])
    write_tsv(root / "stage2/train/loss.tsv", "loss", [(2, 1.2), (3, 1.0)])
    write_tsv(root / "stage2/train/auc.tsv", "auc", [(2, 0.52), (3, 0.58)])
    return root


# ------------------------------------------------------------------------------------------- ROC / PR
def test_roc_points_of_four_images_by_hand():
    # Thresholds from the top: 0.8 -> TP 1, FP 0 -> (0, 0.5); 0.4 -> TP 1, FP 1 -> (0.5, 0.5);
    # 0.35 -> TP 2, FP 1 -> (0.5, 1); 0.1 -> everything -> (1, 1); plus the start (0, 0).
    # AUC: of the 4 positive/negative pairs, 0.35 loses to 0.4 and the other three are ordered: 3/4.
    spec = roc_spec(HAND_TRUE, HAND_PROB, labels=("any",))
    points = sorted(layer_values(spec, "fpr"), key=lambda row: row["order"])
    assert [(row["fpr"], row["tpr"]) for row in points] == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    assert [row["threshold"] for row in points[1:]] == [0.8, 0.4, 0.35, 0.1]
    assert points[0]["threshold"] is None  # sklearn's "above every score" threshold is infinite
    assert {row["series"] for row in points} == {"any (AUC 0.750)"}
    assert spec["title"]["text"] and spec["layer"][1]["encoding"]["x"]["title"] and spec["layer"][1]["encoding"]["y"]["title"]


def test_roc_has_all_six_labels_in_the_legend_and_says_when_one_has_no_auc():
    y_true, y_prob = synthetic_predictions()
    y_true[:, 1] = 0  # no epidural positives
    spec = roc_spec(y_true, y_prob)
    domain = spec["layer"][1]["encoding"]["color"]["scale"]["domain"]
    assert len(domain) == 6
    assert [name.split(" ")[0].rstrip(":") for name in domain] == list(LABELS)
    assert domain[1] == "epidural: no AUC (one class only)"
    assert all(re.fullmatch(r"\S+ \(AUC 0\.\d{3}\)", name) for i, name in enumerate(domain) if i != 1)
    assert {row["label"] for row in layer_values(spec, "fpr")} == set(LABELS) - {"epidural"}


def test_curves_are_thinned_keeping_their_ends():
    rng = np.random.default_rng(1)
    y_true = (rng.random((20000, 6)) < 0.3).astype(int)
    y_prob = rng.random((20000, 6))  # noise: roc_curve keeps thousands of corners
    for spec, x, _y in (
        (roc_spec(y_true, y_prob, max_points=200), "fpr", "tpr"),
        (precision_recall_spec(y_true, y_prob, max_points=200), "recall", "precision"),
    ):
        values = layer_values(spec, x)
        for label in LABELS:
            points = sorted((row for row in values if row["label"] == label), key=lambda row: row["order"])
            assert 150 <= len(points) <= 200
            assert points[0][x] == 0 and points[-1][x] == 1


def test_precision_recall_points_of_four_images_by_hand():
    # From the top threshold: 0.8 -> P 1, R 0.5; 0.4 -> P 1/2, R 0.5; 0.35 -> P 2/3, R 1; 0.1 -> P 1/2, R 1.
    # At each recall the best precision counts (AP = 0.5 * 1 + 0.5 * 2/3 = 0.833); the curve starts at
    # recall 0, precision 1.
    spec = precision_recall_spec(HAND_TRUE, HAND_PROB, labels=("any",))
    points = sorted(layer_values(spec, "recall"), key=lambda row: row["order"])
    assert [(row["recall"], row["precision"]) for row in points] == [(0, 1), (0.5, 1), (1, pytest.approx(2 / 3, abs=1e-6))]
    assert points[0]["series"] == "any (AP 0.833, prevalence 50.0%)"
    assert layer_values(spec, "prevalence") == [{"label": "any", "series": "any (AP 0.833, prevalence 50.0%)", "prevalence": 0.5}]
    assert len(precision_recall_spec(HAND_TRUE, HAND_PROB, labels=("any",), prevalence_baselines=False)["layer"]) == 1


def test_specs_reject_wrong_shapes_and_values():
    with pytest.raises(ValueError, match=r"shape \(N, 6\).*Received: \(4, 1\) and \(4, 1\)"):
        roc_spec(HAND_TRUE, HAND_PROB)
    with pytest.raises(ValueError, match="only 0 and 1"):
        precision_recall_spec(HAND_TRUE * 2, HAND_PROB, labels=("any",))
    with pytest.raises(ValueError, match="NaN"):
        calibration_spec(HAND_TRUE, HAND_PROB * np.nan, labels=("any",))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]. Received values from 0.2 to 1.6"):
        calibration_spec(HAND_TRUE, HAND_PROB * 2, labels=("any",))


# ---------------------------------------------------------------------------------------- calibration
def test_quantile_calibration_bins_by_hand():
    # Two quantile bins of [0.1, 0.2, 0.6, 0.9]: the median is 0.4, so {0.1, 0.2} (mean 0.15, one positive
    # of two) and {0.6, 0.9} (mean 0.75, both positive).
    table = calibration_bins(np.array([0, 1, 1, 1]), np.array([0.1, 0.2, 0.6, 0.9]), bins=2, strategy="quantile")
    np.testing.assert_allclose(table[["mean_predicted", "observed", "count"]].to_numpy(), [[0.15, 0.5, 2], [0.75, 1.0, 2]])
    np.testing.assert_allclose(table[["low", "high"]].to_numpy(), [[0.1, 0.4], [0.4, 0.9]])


def test_quantile_ties_stay_in_one_bin_and_an_edge_goes_down():
    # Quartiles of [0.2, 0.2, 0.2, 0.8] are 0.2, 0.2, 0.2, 0.35 (0.2 + 0.25 * 0.6), 0.8: the equal edges merge
    # into two bins, {0.2 x 3} (one positive) and {0.8}.
    table = calibration_bins(np.array([0, 0, 1, 1]), np.array([0.2, 0.2, 0.2, 0.8]), bins=4, strategy="quantile")
    np.testing.assert_allclose(table[["mean_predicted", "observed", "count"]].to_numpy(), [[0.2, 1 / 3, 3], [0.8, 1.0, 1]])
    # [0.1, 0.3, 0.5] in two bins: the median 0.3 is the inner edge, and 0.3 goes to the lower bin.
    table = calibration_bins(np.array([0, 1, 1]), np.array([0.1, 0.3, 0.5]), bins=2, strategy="quantile")
    assert table["count"].tolist() == [2, 1]
    np.testing.assert_allclose(table["mean_predicted"], [0.2, 0.5])


def test_uniform_calibration_bins_by_hand():
    # Four equal-width bins: [0, 0.25] {0.0, 0.1, 0.25}, (0.25, 0.5] empty, (0.5, 0.75] {0.7}, (0.75, 1] {0.8, 1.0}.
    table = calibration_bins(np.array([0, 0, 1, 0, 1, 1]), np.array([0.0, 0.1, 0.25, 0.7, 0.8, 1.0]), bins=4)
    assert table["bin"].tolist() == [0, 2, 3]
    np.testing.assert_allclose(
        table[["low", "high", "mean_predicted", "observed", "count"]].to_numpy(),
        [[0, 0.25, 0.35 / 3, 1 / 3, 3], [0.5, 0.75, 0.7, 0, 1], [0.75, 1, 0.9, 1, 2]],
    )


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_calibration_bins_agree_with_a_direct_count_by_their_rule(strategy):
    # The rule written out, without searchsorted or bincount: a value belongs to the bin whose upper edge is the
    # first inner edge it does not exceed (low < p <= high); edges as sklearn's calibration_curve documents them.
    rng = np.random.default_rng(3)
    y_prob = np.round(rng.beta(0.5, 3, 2000), 2)  # rounded: many ties and values on the edges
    y_true = (rng.random(2000) < y_prob).astype(int)
    edges = np.percentile(y_prob, np.linspace(0, 100, 11)) if strategy == "quantile" else np.linspace(0, 1, 11)
    member = (y_prob[:, None] > edges[None, 1:-1]).sum(axis=1)
    expected = [
        (index, y_prob[member == index].mean(), y_true[member == index].mean(), int((member == index).sum()))
        for index in range(10)
        if (member == index).any()
    ]
    table = calibration_bins(y_true, y_prob, bins=10, strategy=strategy)
    assert table["bin"].tolist() == [row[0] for row in expected]
    assert table["count"].tolist() == [row[3] for row in expected]
    np.testing.assert_allclose(table["mean_predicted"], [row[1] for row in expected], rtol=1e-12)
    np.testing.assert_allclose(table["observed"], [row[2] for row in expected], rtol=1e-12)
    np.testing.assert_allclose(table["low"], edges[table["bin"]], rtol=0)
    np.testing.assert_allclose(table["high"], edges[table["bin"] + 1], rtol=0)
    observed, predicted = calibration_curve(y_true, y_prob, n_bins=10, strategy=strategy)  # and they are sklearn's
    np.testing.assert_array_equal(table["observed"], observed)
    np.testing.assert_array_equal(table["mean_predicted"], predicted)


def test_calibration_bins_of_five_images_by_hand():
    # Two equal-width bins: [0, 0.5] holds 0.1, 0.5 (on the edge: the lower bin) and 0.3; (0.5, 1] holds 0.9, 0.7.
    # Lower: mean (0.1 + 0.5 + 0.3) / 3 = 0.3, positives 1 of 3; upper: mean 0.8, positives 2 of 2.
    table = calibration_bins(np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.5, 0.3, 0.9, 0.7]), bins=2)
    assert table.columns.tolist() == ["bin", "low", "high", "mean_predicted", "observed", "count"]
    assert table["bin"].tolist() == [0, 1] and table["count"].tolist() == [3, 2]
    np.testing.assert_allclose(
        table[["low", "high", "mean_predicted", "observed"]].to_numpy(), [[0, 0.5, 0.3, 1 / 3], [0.5, 1, 0.8, 1]]
    )
    # One bin: everything, whatever the strategy.
    for strategy in ("uniform", "quantile"):
        (row,) = calibration_bins(
            np.array([0, 1, 0, 1, 1]), np.array([0.1, 0.5, 0.3, 0.9, 0.7]), bins=1, strategy=strategy
        ).itertuples()
        assert (row.count, row.observed) == (5, 0.6) and row.mean_predicted == pytest.approx(0.5)


def test_calibration_bins_reject_bad_arguments():
    with pytest.raises(ValueError, match="bins must be a positive integer. Received: 0"):
        calibration_bins(np.array([0, 1]), np.array([0.1, 0.2]), bins=0)
    with pytest.raises(ValueError, match="strategy must be one of uniform, quantile. Received: 'kmeans'"):
        calibration_bins(np.array([0, 1]), np.array([0.1, 0.2]), strategy="kmeans")
    with pytest.raises(ValueError, match="one length. Received: 2 and 3"):
        calibration_bins(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"y_true must hold only 0 and 1. Received the values \[0, 2\]"):
        calibration_bins(np.array([0, 2]), np.array([0.1, 0.2]))


def test_calibration_spec_carries_the_bins_and_the_count_in_the_tooltip():
    y_true = np.array([[0, 0], [1, 0], [1, 0], [1, 1]])
    y_prob = np.array([[0.1, 0.5], [0.2, 0.5], [0.6, 0.5], [0.9, 0.5]])
    spec = calibration_spec(y_true, y_prob, labels=("any", "subdural"), bins=2, strategy="quantile")
    any_rows = [row for row in spec["data"]["values"] if row["label"] == "any"]
    assert [(row["mean_predicted"], row["observed"], row["count"]) for row in any_rows] == [(0.15, 0.5, 2), (0.75, 1.0, 2)]
    subdural_rows = [row for row in spec["data"]["values"] if row["label"] == "subdural"]
    assert [(row["mean_predicted"], row["observed"], row["count"]) for row in subdural_rows] == [(0.5, 0.25, 4)]
    tooltip = [layer for layer in spec["spec"]["layer"] if "tooltip" in layer["encoding"]][0]["encoding"]["tooltip"]
    assert "count" in [item["field"] for item in tooltip]
    diagonal = spec["spec"]["layer"][0]["encoding"]
    assert (diagonal["x"]["datum"], diagonal["y"]["datum"], diagonal["x2"]["datum"], diagonal["y2"]["datum"]) == (0, 0, 1, 1)


# ------------------------------------------------------------------------------------------- training
def test_training_curves_read_a_hand_written_tsv_set(tmp_path):
    curves = read_training_curves(tiny_dvclive(tmp_path / "metrics"))
    assert len(curves) == 14
    stage1_loss = curves[(curves.network == "stage1") & (curves.metric == "loss")]
    assert stage1_loss[["split", "step", "value"]].to_numpy().tolist() == [
        ["train", 0, 0.7],
        ["train", 1, 0.5],
        ["validation", 0, 0.8],
        ["validation", 1, 0.6],
    ]
    specs = training_specs(curves)
    assert list(specs) == ["training_stage1", "training_stage2"]
    stage2 = specs["training_stage2"]
    assert stage2["title"]["text"] == "Training curves: stage2"
    # loss first, then AUC, then the per-label AUCs in label order
    assert [chart["title"]["text"] for chart in stage2["concat"]] == ["loss", "AUC", "AUC epidural", "AUC subdural"]
    assert [chart["encoding"]["y"]["title"] for chart in stage2["concat"]] == ["loss", "AUC", "AUC", "AUC"]
    assert {"split": "validation", "metric": "auc_epidural", "epoch": 3, "value": 0.7} in stage2["data"]["values"]
    assert stage2["concat"][0]["encoding"]["color"]["scale"]["domain"] == ["train", "validation"]
    assert specs["training_stage1"]["concat"][1]["encoding"]["color"]["scale"]["domain"] == ["train", "validation"]


def test_training_curves_errors(tmp_path):
    assert read_training_curves(tmp_path).empty
    assert training_specs(read_training_curves(tmp_path)) == {}
    curves = read_training_curves(tiny_dvclive(tmp_path / "metrics"))
    with pytest.raises(ValueError, match=r"No training curves for network 'model'. Networks present: \['stage1', 'stage2'\]"):
        training_spec(curves, "model")
    (tmp_path / "bad/model/train").mkdir(parents=True)
    (tmp_path / "bad/model/train/loss.tsv").write_text("step\tvalue\n0\t1.0\n")
    with pytest.raises(ValueError, match=r"loss.tsv must have the columns 'step' and 'loss'"):
        read_training_curves(tmp_path / "bad")


# ---------------------------------------------------------------------------------------- rendering
def all_charts(tmp_path) -> dict[str, dict]:
    y_true, y_prob = synthetic_predictions()
    return {
        **training_specs(read_training_curves(tiny_dvclive(tmp_path / "metrics"))),
        "roc": roc_spec(y_true, y_prob),
        "precision_recall": precision_recall_spec(y_true, y_prob),
        "calibration": calibration_spec(y_true, y_prob),
    }


def test_every_chart_renders_to_a_drawn_png(tmp_path):
    for name, spec in all_charts(tmp_path).items():
        image = Image.open(io.BytesIO(render_png(spec))).convert("RGB")
        width, height = image.size
        assert 500 <= width <= 4000 and 300 <= height <= 4000, (name, image.size)
        pixels = np.asarray(image).reshape(-1, 3).astype(np.int32)
        colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
        assert len(colours) > 20, name  # lines, text and anti-aliasing, not a blank canvas
        assert (pixels == 255).all(axis=1).mean() > 0.5, name  # on a white background
    assert (
        Image.open(io.BytesIO(render_png(roc_spec(HAND_TRUE, HAND_PROB, labels=("any",)), scale=1))).size[0]
        < (Image.open(io.BytesIO(render_png(roc_spec(HAND_TRUE, HAND_PROB, labels=("any",)), scale=2))).size[0])
    )


def test_report_is_offline_complete_and_deterministic(tmp_path):
    charts = all_charts(tmp_path)
    summary = {
        "any": {"auc": 0.97, "auc_ci95": [0.95, 0.99], "positives": 40},
        "epidural": {"auc": None, "auc_ci95": None, "positives": 0},
        "weighted_log_loss": 0.081234,
        "weighted_log_loss_ci95": [0.07, 0.09],
        "mean_subtype_auc": 0.9,
    }
    path = write_report(tmp_path / "plots", charts, "ICH <test> report", summary)
    assert path == tmp_path / "plots" / "report.html"
    text = path.read_text()

    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) == len(charts)
    assert all(source.startswith("data:image/png;base64,") for source in images)
    for name, source in zip(charts, images):
        assert (
            base64.b64decode(source.removeprefix("data:image/png;base64,")) == (tmp_path / "plots" / f"{name}.png").read_bytes()
        )
    # Outside the embedded bytes: no URL, script, stylesheet link or font to fetch.
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    for needle in ("http://", "https://", "//cdn", 'src="//', "<script", "<link", "@import", "url(", "@font-face"):
        assert needle not in markup.lower(), needle
    assert re.findall(r'(?:src|href)="([^"]*)"', markup) == [""] * len(charts)

    assert "<title>ICH &lt;test&gt; report</title>" in text
    assert '<th scope="row">any</th><td>40</td><td>0.970</td><td>[0.950, 0.990]</td>' in text
    assert '<th scope="row">epidural</th><td>0</td><td>–</td><td>–</td>' in text  # AUC undefined: missing, as on every page
    assert "<td>0.0812 (95% CI [0.0700, 0.0900])</td>" in text
    assert "mean subtype AUC</th><td>0.900</td>" in text

    again = write_report(tmp_path / "again", charts, "ICH <test> report", summary)
    assert again.read_bytes() == path.read_bytes()
    assert report_html({}, "empty", None).count("<figure") == 0


def test_report_rejects_chart_names_that_are_not_file_names(tmp_path):
    for name in ("../roc", ".hidden", "report", "a/b", ""):
        with pytest.raises(ValueError, match="Chart names become file names"):
            write_report(tmp_path, {name: {}}, "title")
    assert not (tmp_path / "report.html").exists()
