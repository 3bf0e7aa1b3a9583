"""The paired change in weighted log loss between two models, checked by enumerating every resample."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ich.evaluation.comparison import metrics_summary, paired_log_loss_change


def _wll(y, p):
    p = np.clip(p, 1e-15, 1 - 1e-15)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)
    return float((losses * np.array([2, 1, 1, 1, 1, 1])).sum() / 7)


def test_the_change_and_its_paired_interval_match_an_enumeration_of_the_resamples():
    rng = np.random.default_rng(0)
    y = (rng.random((6, 6)) > 0.6).astype(float)
    baseline = rng.uniform(0.05, 0.95, size=(6, 6))
    candidate = np.clip(baseline + np.where(y > 0, 0.2, -0.2), 0.01, 0.99)  # better on every image
    groups = np.array(["p1", "p1", "p2", "p2", "p3", "p3"])
    result = paired_log_loss_change(y, baseline, candidate, groups, draws=4000, seed=0)
    assert result["change"] == pytest.approx(_wll(y, candidate) - _wll(y, baseline))
    assert result["relative_change"] == pytest.approx(result["change"] / _wll(y, baseline))
    assert result["share_of_draws_better"] == 1.0
    # every resample of 3 patients (27, equally likely): the paired differences bound the interval
    differences = []
    for picks in itertools.product(range(3), repeat=3):
        rows = np.concatenate([np.flatnonzero(groups == f"p{p + 1}") for p in picks])
        differences.append(_wll(y[rows], candidate[rows]) - _wll(y[rows], baseline[rows]))
    low, high = result["change_ci95"]
    assert min(differences) - 1e-12 <= low <= high <= max(differences) + 1e-12
    assert paired_log_loss_change(y, baseline, candidate, groups, draws=0, seed=0)["change_ci95"] is None


def test_the_summary_line_names_every_label_and_undefined_aucs():
    result = {
        label: {"auc": 0.5 + index / 10}
        for index, label in enumerate(["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"])
    }
    result["epidural"]["auc"] = None
    line = metrics_summary(
        {**result, "mean_subtype_auc": None, "weighted_log_loss": 0.12345, "weighted_log_loss_ci95": [0.1, 0.15]}
    )
    assert line == (
        "AUC any 0.500, epidural n/a, intraparenchymal 0.700, intraventricular 0.800, subarachnoid 0.900, subdural 1.000; "
        "mean subtype AUC None; weighted log loss 0.1235 [0.1000, 0.1500]"
    )
