import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import log_loss

from ich.core.labels import LABELS
from ich.evaluation.metrics import evaluate_predictions, label_metrics, tune_thresholds, weighted_log_loss
from ich.models.combination import combine_cascade


def test_product_combination():
    combined = combine_cascade(np.array([0.5, 1.0]), np.array([[0.2, 0.4, 0.6, 0.8, 1.0], [0.1] * 5]))
    np.testing.assert_allclose(combined[0], [0.5, 0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(combined[1], [1.0] + [0.1] * 5)


def test_gate_combination_uses_conditional_only_when_stage_one_is_confident():
    # P(any) = 0.9 and 0.5 reach the gate (>= 0.5): the conditional 0.5 as is; 0.2 does not: 0.2 * 0.5 = 0.1.
    combined = combine_cascade(np.array([[0.9], [0.5], [0.2]]), np.full((3, 5), 0.5), method="gate", gate_threshold=0.5)
    np.testing.assert_allclose(combined[:, 0], [0.9, 0.5, 0.2])
    np.testing.assert_allclose(combined[0, 1:], 0.5)
    np.testing.assert_allclose(combined[1, 1:], 0.5)
    np.testing.assert_allclose(combined[2, 1:], 0.1)


def test_combine_cascade_rejects_unknown_method_and_wrong_shape():
    with pytest.raises(ValueError, match="product, gate. Received: 'max'"):
        combine_cascade(np.array([0.5]), np.full((1, 5), 0.5), method="max")
    with pytest.raises(ValueError, match=r"shape \(2, 5\). Received: \(2, 4\)"):
        combine_cascade(np.array([0.5, 0.5]), np.full((2, 4), 0.5))


def test_weighted_log_loss_one_image():
    # Every one of the six labels is predicted 0.9 on the right side, so each loses -ln(0.9):
    # -(2*ln(0.9) + 5*ln(0.9))/7 = -ln(0.9) = 0.10536051565782628.
    y = np.array([[1, 0, 0, 0, 0, 0]])
    p = np.array([[0.9, 0.1, 0.1, 0.1, 0.1, 0.1]])
    assert weighted_log_loss(y, p) == pytest.approx(0.10536051565782628, rel=1e-12)


def test_weighted_log_loss_counts_any_twice():
    # any: -ln(0.5) = ln 2 weighted 2; five subtypes -ln(0.9) each:
    # (2*ln(2) - 5*ln(0.9))/7 = 0.27329956277271744.
    y = np.zeros((1, 6))
    p = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1]])
    assert weighted_log_loss(y, p) == pytest.approx(0.27329956277271744, rel=1e-12)


def test_weighted_log_loss_two_images():
    # Per label, the mean over the two images; any weighted 2:
    #   any        -(ln 0.8 + ln 0.7)/2   (x2)
    #   epidural   -(ln 0.9 + ln 0.8)/2
    #   3 labels   -(ln 0.9 + ln 0.9)/2   each
    #   subdural   -(ln 0.6 + ln 0.9)/2
    # -(ln 0.8 + ln 0.7 + (8*ln 0.9 + ln 0.8 + ln 0.6)/2)/7 = 0.19546359220347823
    y = np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
    p = np.array([[0.8, 0.1, 0.1, 0.1, 0.1, 0.6], [0.3, 0.2, 0.1, 0.1, 0.1, 0.1]])
    assert weighted_log_loss(y, p) == pytest.approx(0.19546359220347823, rel=1e-12)


def test_weighted_log_loss_clips_certain_mistakes_at_1e_15():
    # any is certain and wrong: p clipped to 1e-15 (Kaggle's clip), loss -ln(1e-15) = 15*ln(10) weighted 2;
    # the five right subtypes at p = 0 are clipped to 1e-15 too, each losing -ln(1 - 1e-15) ~ 1e-15:
    # (2*15*2.302585092994046 + 5e-15)/7 = 69.07755278982138/7 = 9.868221827117340
    y = np.array([[1, 0, 0, 0, 0, 0]])
    p = np.zeros((1, 6))
    assert weighted_log_loss(y, p) == pytest.approx(9.868221827117340, rel=1e-12)


def test_weighted_log_loss_clips_the_top_too():
    # A certain and wrong "1.0" on a negative any: clipped to 1 - 1e-15, which float64 stores as
    # 1 - 9*2**-53 = 1 - 9.992007221626409e-16, so the loss is -ln(9.992007221626409e-16)
    # = 16*ln(10) - ln(9.992007221626409) = 36.84136148790474 - 2.30178549556386 = 34.53957599234088,
    # weighted 2; the subtypes at 0 cost ~1e-15 each:
    # 2*34.53957599234088/7 = 9.868450283526
    y = np.zeros((1, 6))
    p = np.array([[1.0, 0, 0, 0, 0, 0]])
    assert weighted_log_loss(y, p) == pytest.approx(9.868450283526, rel=1e-11)


# Five images, two positives (A, C) and three negatives (B, D, E):
#          A    B    C    D    E
TRUTH = [1, 0, 1, 0, 0]
PROB = [0.9, 0.6, 0.6, 0.2, 0.7]
# AUC: the 2 x 3 positive/negative pairs ordered correctly, ties 1/2:
#   A>B 1, A>D 1, A>E 1, C=B 1/2, C>D 1, C<E 0  ->  4.5/6 = 0.75


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        # p >= 0.6 flags A, B, C, E: TP 2 (A, C), FP 2 (B, E), FN 0, TN 1 (D).
        # accuracy (2+1)/5, precision 2/4, recall 2/2, F1 2*(1/2)*1/(1/2+1) = 2/3.
        (0.6, {"accuracy": 0.6, "precision": 0.5, "recall": 1.0, "f1": 2 / 3}),
        # p >= 0.65 flags A, E: TP 1, FP 1, FN 1 (C), TN 2 (B, D).
        # accuracy 3/5, precision 1/2, recall 1/2, F1 1/2.
        (0.65, {"accuracy": 0.6, "precision": 0.5, "recall": 0.5, "f1": 0.5}),
        # p >= 0.95 flags nothing: TN 3, FN 2; undefined precision and F1 count as 0.
        (0.95, {"accuracy": 0.6, "precision": 0.0, "recall": 0.0, "f1": 0.0}),
    ],
)
def test_label_metrics_by_hand(threshold, expected):
    metrics = label_metrics(np.array(TRUTH), np.array(PROB), threshold)
    assert metrics["auc"] == pytest.approx(0.75)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
    assert metrics["positives"] == 2
    assert metrics["threshold"] == threshold


def test_label_metrics_auc_is_the_mann_whitney_statistic():
    # AUC = U / (positives * negatives), U from scipy; rounded scores make many ties.
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    prob = np.round(np.clip(truth * 0.3 + rng.random(200) * 0.7, 0, 1), 1)
    positives, negatives = prob[truth == 1], prob[truth == 0]
    u_statistic = mannwhitneyu(positives, negatives).statistic
    assert label_metrics(truth, prob, 0.5)["auc"] == pytest.approx(u_statistic / (len(positives) * len(negatives)))


def test_label_metrics_auc_undefined_for_one_class():
    metrics = label_metrics(np.zeros(4), np.array([0.1, 0.2, 0.7, 0.9]), 0.5)
    assert metrics["auc"] is None
    # Two false positives, two true negatives.
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["positives"] == 0


def test_undefined_auc_is_none_and_summary_skips_it():
    truth = np.zeros((6, 6))
    truth[:3, 0] = 1
    truth[:2, 5] = 1
    prob = np.linspace(0.1, 0.9, 36).reshape(6, 6)
    result = evaluate_predictions(truth, prob, 0.5, tune_thresholds(truth, prob))
    assert result["epidural"]["auc"] is None
    assert set(LABELS) <= set(result)
    assert result["images"] == 6
    # Scores grow down each column and the positives are the top rows, so every positive/negative pair
    # of `any` and of `subdural` is misordered: both AUCs are 0. Four subtype AUCs are undefined, so the
    # subtype mean and the macro AUC are null (a mean over a varying subset would not compare across runs).
    assert result["any"]["auc"] == 0.0
    assert result["subdural"]["auc"] == 0.0
    assert result["mean_subtype_auc"] is None
    assert result["subtype_aucs_defined"] == 1
    assert result["macro"]["auc"] is None
    # Independently: scikit-learn's log loss per column, any weighted 2, the sum over 7.
    per_label = [log_loss(truth[:, index], prob[:, index], labels=[0, 1]) for index in range(6)]
    assert result["weighted_log_loss"] == pytest.approx((2 * per_label[0] + sum(per_label[1:])) / 7, rel=1e-9)


def test_tuned_threshold_maximises_f1():
    # F1 at each candidate threshold (p >= t flags):
    #   0.9: TP 1 FP 0 FN 2 -> 2/(2+0+2) = 1/2      0.6: TP 2 FP 0 FN 1 -> 4/5
    #   0.35: TP 2 FP 1 FN 1 -> 4/6 = 2/3          0.3: TP 3 FP 1 FN 0 -> 6/7 (best)
    #   0.1: TP 3 FP 2 FN 0 -> 6/8 = 3/4
    truth = np.array([[0], [0], [1], [1], [1]])
    prob = np.array([[0.1], [0.35], [0.3], [0.6], [0.9]])
    threshold = tune_thresholds(truth, prob, labels=["any"])["any"]
    assert threshold == pytest.approx(0.3)
    assert label_metrics(truth[:, 0], prob[:, 0], threshold)["f1"] == pytest.approx(6 / 7)


def test_tuned_thresholds_per_label_and_default_without_both_classes():
    # Column 0: positives at 0.8 and 0.7, negatives at 0.75 and 0.1. F1 at 0.8: TP 1 FN 1 -> 2/3;
    # at 0.75: TP 1 FP 1 FN 1 -> 1/2; at 0.7: TP 2 FP 1 -> 4/5 (best); at 0.1: TP 2 FP 2 -> 2/3.
    # Column 1 has no positive and column 2 no negative: the default.
    truth = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    prob = np.array([[0.8, 0.9, 0.2], [0.75, 0.1, 0.3], [0.7, 0.2, 0.4], [0.1, 0.3, 0.5]])
    thresholds = tune_thresholds(truth, prob, labels=["a", "b", "c"], default=0.42)
    assert thresholds == {"a": pytest.approx(0.7), "b": 0.42, "c": 0.42}
