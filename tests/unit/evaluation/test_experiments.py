"""`ich experiments`: the runs' table, the params that differ, and the page's curves of any two runs."""

import json

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ich.core.labels import LABELS
from ich.evaluation.experiments import HEADLINE_FIELDS, ExperimentRow, changed_params
from ich.evaluation.experiments_cli import experiments_table
from ich.reports.experiments_page import curve_points, experiments_html, pick_two_spec


def _row(name, seed, loss, ci=None):
    row = ExperimentRow(name, name, "experiment", None, {"train.seed": seed, "train.epochs": 12, "model.arch": "cascade"})
    row.values = {column: (None, None) for column, *_ in HEADLINE_FIELDS}
    row.values["weighted log loss"] = (loss, ci)
    return row


def test_changed_params_are_those_not_equal_in_every_run():
    rows = [_row("a", 1, 0.1), _row("b", 2, 0.2)]
    rows[1].params["model.arch"] = "convnext"
    assert changed_params(rows) == ["train.seed", "model.arch"]
    assert changed_params(rows[:1]) == []


def test_table_has_each_run_its_changed_params_and_values_with_intervals():
    rows = [_row("seed-1", 1, 0.09771, [0.0553, 0.1479]), _row("seed-2", 2, None)]
    lines = experiments_table(rows, ["train.seed"]).splitlines()
    assert lines[0].split()[:2] == ["run", "train.seed"]
    assert lines[1].split()[:5] == ["seed-1", "1", "0.0977", "[0.0553,", "0.1479]"]
    assert lines[2].split()[:3] == ["seed-2", "2", "–"]


def test_curve_summaries_match_scikit_learn_and_single_class_labels_are_left_out():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=(60, len(LABELS)))
    truth[:, 1] = 0  # epidural: no positives
    scores = {"A": rng.random((60, len(LABELS))), "B": np.clip(truth * 0.6 + rng.random((60, len(LABELS))) * 0.5, 0, 1)}
    points = curve_points(truth, scores)
    assert {point["label"] for point in points} == set(LABELS) - {"epidural"}
    for run, probabilities in scores.items():
        for index, label in enumerate(LABELS):
            if label == "epidural":
                continue
            summary = {p["kind"]: p["summary"] for p in points if p["run"] == run and p["label"] == label}
            assert summary["roc"] == round(roc_auc_score(truth[:, index], probabilities[:, index]), 4)
            assert summary["precision_recall"] == round(average_precision_score(truth[:, index], probabilities[:, index]), 4)
    spec = pick_two_spec(points, ["A", "B"])
    choices = {param["name"]: param for param in spec["params"]}
    assert choices["run_a"]["value"] == "A" and choices["run_b"]["value"] == "B"
    assert choices["run_a"]["bind"]["options"] == ["A", "B"] and choices["label"]["bind"]["options"] == list(LABELS)


def test_page_is_offline_and_a_run_name_cannot_close_the_script():
    name = "x</script><script>alert(1)</script>"
    row = _row(name, 1, 0.1)
    spec = {"data": {"values": [{"run": name}]}}
    page = experiments_html("runs", [{"name": "weighted log loss", "kind": "loss"}], [vars(row)], [], [], spec)
    assert page.count("</script>") == 2  # the bundle's and the embedding script's own
    assert "<script>alert(1)" not in page
    assert "x&lt;/script&gt;" in page  # the table cell, escaped
    embedded = page.split('vegaEmbed("#curves", ')[1].split(", {actions")[0]
    assert json.loads(embedded)["data"]["values"][0]["run"] == name
