import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from ich.evaluation import combine_cascade, evaluate_predictions, label_metrics, tune_thresholds, weighted_log_loss
from ich.labels import LABELS


def test_product_combination():
    combined = combine_cascade(np.array([0.5, 1.0]), np.array([[0.2, 0.4, 0.6, 0.8, 1.0], [0.1] * 5]))
    np.testing.assert_allclose(combined[0], [0.5, 0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(combined[1], [1.0] + [0.1] * 5)


def test_gate_combination_uses_conditional_only_when_stage_one_is_confident():
    combined = combine_cascade(np.array([[0.9], [0.2]]), np.full((2, 5), 0.5), method="gate", gate_threshold=0.5)
    np.testing.assert_allclose(combined[0, 1:], 0.5)
    np.testing.assert_allclose(combined[1, 1:], 0.1)
    with pytest.raises(ValueError, match="product, gate"):
        combine_cascade(np.array([0.5]), np.full((1, 5), 0.5), method="max")


def test_weighted_log_loss_by_hand():
    y = np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
    p = np.array([[0.8, 0.1, 0.1, 0.1, 0.1, 0.6], [0.3, 0.2, 0.1, 0.1, 0.1, 0.1]])
    per_label = [
        -(math.log(0.8) + math.log(0.7)) / 2,
        -(math.log(0.9) + math.log(0.8)) / 2,
        -(math.log(0.9) + math.log(0.9)) / 2,
        -(math.log(0.9) + math.log(0.9)) / 2,
        -(math.log(0.9) + math.log(0.9)) / 2,
        -(math.log(0.6) + math.log(0.9)) / 2,
    ]
    expected = (2 * per_label[0] + sum(per_label[1:])) / 7
    assert weighted_log_loss(y, p) == pytest.approx(expected, rel=1e-9)


def test_label_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    prob = np.clip(truth * 0.3 + rng.random(200) * 0.7, 0, 1)
    metrics = label_metrics(truth, prob, 0.5)
    predicted = prob >= 0.5
    assert metrics["auc"] == pytest.approx(roc_auc_score(truth, prob))
    assert metrics["precision"] == pytest.approx(precision_score(truth, predicted))
    assert metrics["recall"] == pytest.approx(recall_score(truth, predicted))
    assert metrics["f1"] == pytest.approx(f1_score(truth, predicted))
    assert metrics["accuracy"] == pytest.approx((predicted == truth).mean())


def test_undefined_auc_is_none_and_summary_skips_it():
    truth = np.zeros((6, 6))
    truth[:3, 0] = 1
    truth[:2, 5] = 1
    prob = np.linspace(0.1, 0.9, 36).reshape(6, 6)
    result = evaluate_predictions(truth, prob, 0.5, tune_thresholds(truth, prob))
    assert result["epidural"]["auc"] is None
    assert set(LABELS) <= set(result)
    assert result["mean_subtype_auc"] == pytest.approx(result["subdural"]["auc"])
    assert result["weighted_log_loss"] == pytest.approx(weighted_log_loss(truth, prob))


def test_tuned_threshold_maximises_f1():
    truth = np.array([[0], [0], [1], [1], [1]])
    prob = np.array([[0.1], [0.35], [0.3], [0.6], [0.9]])
    threshold = tune_thresholds(truth, prob, labels=["any"])["any"]
    assert threshold == pytest.approx(0.3)
