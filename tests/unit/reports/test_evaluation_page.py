"""Series-level metrics, the subtype mean's rule and the assembled metrics/evaluate.json object."""

import json

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ich.core.labels import LABELS, SUBTYPES
from ich.evaluation.metrics import evaluate_predictions, mean_subtype_auc, series_predictions

ANY, SUBDURAL = 0, 5
# Three series over two patients, slices listed out of order. Per slice: (series, patient, any truth,
# any prob, subdural truth, subdural prob); the other four subtypes are negative everywhere at 0.1.
SLICES = [
    ("S_c", "P2", 1, 0.5, 0, 0.05),
    ("S_a", "P1", 0, 0.2, 0, 0.1),
    ("S_b", "P1", 0, 0.3, 0, 0.3),
    ("S_a", "P1", 1, 0.8, 0, 0.9),
    ("S_c", "P2", 0, 0.1, 0, 0.1),
    ("S_b", "P1", 0, 0.6, 1, 0.4),
    ("S_a", "P1", 0, 0.4, 0, 0.2),
    ("S_c", "P2", 0, 0.7, 0, 0.15),
]
# By hand, series in sorted order S_a, S_b, S_c (positive if any slice is, score the highest slice):
#   any:      truth 1, 0, 1   score 0.8, 0.6, 0.7   (S_c's highest is a negative slice: still its score)
#   subdural: truth 0, 1, 0   score 0.9, 0.4, 0.15
SERIES_ANY_TRUTH, SERIES_ANY_SCORE = [1, 0, 1], [0.8, 0.6, 0.7]
SERIES_SDH_TRUTH, SERIES_SDH_SCORE = [0, 1, 0], [0.9, 0.4, 0.15]


def slice_arrays():
    series = np.array([row[0] for row in SLICES])
    groups = np.array([row[1] for row in SLICES])
    truth = np.zeros((len(SLICES), 6), dtype=int)
    prob = np.full((len(SLICES), 6), 0.1)
    for index, (_, _, any_truth, any_prob, sdh_truth, sdh_prob) in enumerate(SLICES):
        truth[index, [ANY, SUBDURAL]] = any_truth, sdh_truth
        prob[index, [ANY, SUBDURAL]] = any_prob, sdh_prob
    return truth, prob, series, groups


def test_series_truth_is_any_slice_and_score_is_the_max():
    truth, prob, series, groups = slice_arrays()
    by_series = series_predictions(truth, prob, series, groups)
    assert by_series.ids.tolist() == ["S_a", "S_b", "S_c"]
    assert by_series.groups.tolist() == ["P1", "P1", "P2"]
    assert by_series.y_true[:, ANY].tolist() == SERIES_ANY_TRUTH
    assert by_series.y_true[:, SUBDURAL].tolist() == SERIES_SDH_TRUTH
    np.testing.assert_allclose(by_series.y_prob[:, ANY], SERIES_ANY_SCORE)
    np.testing.assert_allclose(by_series.y_prob[:, SUBDURAL], SERIES_SDH_SCORE)
    assert (by_series.y_true[:, 1:5] == 0).all()
    np.testing.assert_allclose(by_series.y_prob[:, 1:5], 0.1)


def test_series_level_metrics_by_hand():
    truth, prob, series, groups = slice_arrays()
    result = evaluate_predictions(truth, prob, 0.75, series=series)
    level = result["series_level"]
    assert result["series"] == level["series"] == 3
    # any over series: both positives (0.8, 0.7) above the negative 0.6 -> AUC 1. At 0.75 only S_a (0.8) is
    # flagged: TP 1, FN 1 (S_c), TN 1 -> accuracy 2/3, precision 1, recall 1/2, F1 2/3.
    assert level["any"]["auc"] == pytest.approx(1.0)
    assert level["any"]["accuracy"] == pytest.approx(2 / 3)
    assert level["any"]["precision"] == pytest.approx(1.0)
    assert level["any"]["recall"] == pytest.approx(0.5)
    assert level["any"]["f1"] == pytest.approx(2 / 3)
    assert level["any"]["positives"] == 2
    # subdural: the positive S_b (0.4) beats S_c (0.15), loses to S_a (0.9) -> 1/2. At 0.75 S_a is a false
    # positive, S_b a false negative: accuracy 1/3, precision 0, recall 0, F1 0.
    assert level["subdural"]["auc"] == pytest.approx(0.5)
    assert level["subdural"]["accuracy"] == pytest.approx(1 / 3)
    assert level["subdural"]["f1"] == 0.0
    # Four subtypes have no positive series: AUC null, the subtype mean null, one subtype AUC defined.
    assert level["epidural"]["auc"] is None
    assert level["mean_subtype_auc"] is None
    assert level["subtype_aucs_defined"] == 1
    assert level["prevalence"]["any"] == pytest.approx(2 / 3)
    assert level["prevalence"]["subdural"] == pytest.approx(1 / 3)
    # The series' own weighted log loss, from scikit-learn on the hand-aggregated series.
    per_label = [log_loss(SERIES_ANY_TRUTH, SERIES_ANY_SCORE)] + [log_loss([0, 0, 0], [0.1] * 3, labels=[0, 1])] * 4
    per_label.append(log_loss(SERIES_SDH_TRUTH, SERIES_SDH_SCORE))
    assert level["weighted_log_loss"] == pytest.approx((2 * per_label[0] + sum(per_label[1:])) / 7, rel=1e-12)
    # Slice level is untouched by the series block: any over the 8 slices, by scikit-learn.
    assert result["any"]["auc"] == pytest.approx(roc_auc_score(truth[:, ANY], prob[:, ANY]))
    assert result["images"] == 8


def test_series_spread_over_two_patients_is_rejected():
    truth, prob, series, groups = slice_arrays()
    groups[0] = "P9"  # one slice of S_c now claims another patient
    with pytest.raises(ValueError, match="Series 'S_c' belongs to more than one patient"):
        series_predictions(truth, prob, series, groups)
    with pytest.raises(ValueError, match=r"one series key per image, shape \(8,\). Received: \(7,\)"):
        series_predictions(truth, prob, series[:7])


def test_mean_subtype_auc_needs_all_five():
    aucs = {"any": 0.99, "epidural": 0.7, "intraparenchymal": 0.8, "intraventricular": 0.9, "subarachnoid": 0.6, "subdural": 0.5}
    # (0.7 + 0.8 + 0.9 + 0.6 + 0.5) / 5 = 3.5 / 5 = 0.7; `any` is not a subtype.
    assert mean_subtype_auc(aucs) == pytest.approx(0.7)
    assert mean_subtype_auc({**aucs, "epidural": None}) is None
    assert mean_subtype_auc({**aucs, "any": None}) == pytest.approx(0.7)


def synthetic(images=400, seed=0):
    rng = np.random.default_rng(seed)
    series_of = rng.integers(0, 60, images)
    series = np.array([f"1.2.840.{code}" for code in series_of])
    groups = np.array([f"ID_{code // 2:04x}" for code in series_of])  # two series per patient
    truth = (rng.random((images, 6)) < [0.3, 0.08, 0.1, 0.1, 0.1, 0.1]).astype(int)
    prob = np.clip(truth * 0.4 + rng.random((images, 6)) * 0.6, 0, 1)
    return truth, prob, series, groups


def test_full_report_schema_and_json():
    truth, prob, series, groups = synthetic()
    tuned = {label: 0.4 for label in LABELS}
    result = evaluate_predictions(truth, prob, 0.5, tuned, groups=groups, series=series, series_tuned=tuned, draws=200, seed=1)
    text = json.dumps(result, allow_nan=False)  # plain floats, ints, None: serialisable and finite
    assert json.loads(text) == result
    for level in (result, result["series_level"]):
        for label in LABELS:
            entry = level[label]
            assert set(entry) == {"auc", "auc_ci95", "accuracy", "precision", "recall", "f1", "positives", "threshold", "tuned"}
            low, high = entry["auc_ci95"]
            assert low <= entry["auc"] <= high
        assert {
            "weighted_log_loss",
            "weighted_log_loss_ci95",
            "mean_subtype_auc",
            "subtype_aucs_defined",
            "macro",
            "prevalence",
        } <= set(level)
        assert level["weighted_log_loss_ci95"][0] <= level["weighted_log_loss"] <= level["weighted_log_loss_ci95"][1]
        assert level["subtype_aucs_defined"] == 5
        assert level["mean_subtype_auc"] == pytest.approx(np.mean([level[subtype]["auc"] for subtype in SUBTYPES]))
    assert result["images"] == 400
    assert result["patients"] == len(set(groups.tolist()))
    assert result["series"] == result["series_level"]["series"] == len(set(series.tolist()))
    assert result["prevalence"]["any"] == pytest.approx(truth[:, 0].sum() / 400)
    assert result["bootstrap"] == {"unit": "patient", "draws": 200, "seed": 1, "level": 0.95, "min_valid_draws": 100}
    assert result["any"]["tuned"]["threshold"] == 0.4


def test_old_call_without_patients_or_series_still_works():
    truth, prob, _, _ = synthetic()
    result = evaluate_predictions(truth, prob, 0.5, None)
    assert "auc_ci95" not in result["any"]
    assert "weighted_log_loss_ci95" not in result and "series_level" not in result and "patients" not in result
    assert result["any"]["auc"] == pytest.approx(roc_auc_score(truth[:, 0], prob[:, 0]))
    assert "tuned" not in result["any"]


def test_bad_inputs_are_rejected_with_the_fix():
    truth, prob, _, _ = synthetic(images=10)
    with pytest.raises(ValueError, match=r"shape \(N, 6\).*Received: \(10, 5\)"):
        evaluate_predictions(truth[:, :5], prob[:, :5], 0.5)
    prob[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite and in \\[0, 1\\]; check the predictions for NaN"):
        evaluate_predictions(truth, prob, 0.5)
    truth[0, 0] = 2
    with pytest.raises(ValueError, match="Labels must be 0 or 1"):
        evaluate_predictions(truth, np.full((10, 6), 0.5), 0.5)
