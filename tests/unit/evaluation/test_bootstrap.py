"""Patient-level bootstrap: exactness of the weighted AUC/log loss against resampled arrays, the exact
bootstrap distribution of a three-patient case, the interval rule and determinism."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ich.evaluation.bootstrap import (
    bootstrap_counts,
    bootstrap_draws,
    bootstrap_intervals,
    percentile_interval,
    weighted_auc,
)

# Three patients, one label (any). Patient P1: a positive at 0.9 and a negative at 0.3; P2: a positive
# at 0.6 and a negative at 0.7; P3: a negative at 0.2.
GROUPS = np.array(["P1", "P1", "P2", "P2", "P3"])
TRUTH = np.array([[1], [0], [1], [0], [0]])
PROB = np.array([[0.9], [0.3], [0.6], [0.7], [0.2]])
# A resample takes P1 a times, P2 b times, P3 c times (a + b + c = 3). The positives are 0.9 (x a) and
# 0.6 (x b), the negatives 0.3 (x a), 0.7 (x b), 0.2 (x c), 3 in all. 0.9 beats every negative: 3a pairs;
# 0.6 beats 0.3 and 0.2 but not 0.7: b(a + c) pairs. AUC = (3a + b(a + c)) / (3(a + b)):
HAND_AUC = {
    (3, 0, 0): 1.0,
    (0, 3, 0): 0.0,
    (0, 0, 3): None,  # P3 alone: no positive, AUC undefined
    (2, 1, 0): 8 / 9,
    (2, 0, 1): 1.0,
    (1, 2, 0): 5 / 9,
    (0, 2, 1): 1 / 3,
    (1, 0, 2): 1.0,
    (0, 1, 2): 2 / 3,
    (1, 1, 1): 5 / 6,
}


def materialise(counts, groups=GROUPS, truth=TRUTH, prob=PROB):
    """The resampled arrays themselves: every image of the i-th patient (sorted keys) repeated counts[i] times."""
    patients = np.unique(groups)
    rows = np.concatenate([np.flatnonzero(groups == patient).repeat(count) for patient, count in zip(patients, counts)])
    return truth[rows], prob[rows]


def all_resamples():
    """The 27 equally likely ordered draws of three patients, as per-patient counts."""
    return [np.bincount(picks, minlength=3) for picks in itertools.product(range(3), repeat=3)]


def test_weighted_auc_matches_the_hand_enumeration_and_sklearn_on_all_27_resamples():
    counts = np.array(all_resamples())
    aucs, log_losses = bootstrap_draws(TRUTH, PROB, GROUPS, counts, labels=["any"])
    for row, auc, loss in zip(counts, aucs[:, 0], log_losses):
        hand = HAND_AUC[tuple(row)]
        truth, prob = materialise(row)
        if hand is None:
            assert np.isnan(auc)
        else:
            assert auc == pytest.approx(hand, abs=1e-12)
            assert auc == pytest.approx(roc_auc_score(truth[:, 0], prob[:, 0]), abs=1e-12)
        # One label: the weighted log loss is the plain mean log loss (weight 2 over total 2).
        assert loss == pytest.approx(log_loss(truth[:, 0], prob[:, 0], labels=[0, 1]), rel=1e-12)


def exact_quantile(values, q):
    """The q-quantile of the uniform distribution on `values` (the exact bootstrap distribution), and
    how far the CDF stays from q on either side of it (the margin a sampled estimate has to stay in)."""
    values = np.sort(np.asarray(values))
    cdf_at = lambda v: np.mean(values <= v)  # noqa: E731
    below = lambda v: np.mean(values < v)  # noqa: E731
    value = next(v for v in values if cdf_at(v) >= q)
    return value, min(q - below(value), cdf_at(value) - q)


DRAWS = 100_000


@pytest.mark.parametrize("level", [0.95, 0.5])
def test_percentile_interval_converges_to_the_exact_bootstrap_distribution(level):
    # The exact bootstrap distribution: sklearn on each of the 27 materialised resamples (AUC undefined on
    # P3-only: skipped), quantiles taken directly. Where the exact CDF steps clearly across the quantile,
    # 100,000 seeded draws land on the same value: with level 0.95 the interval is [0, 1] (the extreme
    # resamples each have probability 1/26 > 2.5 %), with 0.5 it is [5/9, 1] (CDF 0.154 at 1/3, 0.269 at 5/9;
    # 0.731 at 8/9, the rest at 1).
    exact_aucs, exact_losses = [], []
    for row in all_resamples():
        truth, prob = materialise(row)
        exact_losses.append(log_loss(truth[:, 0], prob[:, 0], labels=[0, 1]))
        if truth.min() != truth.max():
            exact_aucs.append(roc_auc_score(truth[:, 0], prob[:, 0]))
    expected = {0.95: [0.0, 1.0], 0.5: [5 / 9, 1.0]}[level]
    for values, name in ((exact_aucs, "auc"), (exact_losses, "loss")):
        low, low_margin = exact_quantile(values, (1 - level) / 2)
        high, high_margin = exact_quantile(values, (1 + level) / 2)
        # The test's own premise: the CDF stays more than 5 standard errors of a sampled proportion away from
        # each quantile, so the sampled percentile cannot land on a neighbouring value.
        standard_error = np.sqrt(0.25 / DRAWS)
        assert min(low_margin, high_margin) > 5 * standard_error, name
        if name == "auc":
            assert [low, high] == pytest.approx(expected)
        result = bootstrap_intervals(TRUTH, PROB, GROUPS, draws=DRAWS, seed=3, labels=["any"], level=level)
        interval = result["auc_ci95"]["any"] if name == "auc" else result["weighted_log_loss_ci95"]
        assert interval == pytest.approx([low, high], rel=1e-12), name


def test_weighted_auc_equals_sklearn_on_explicitly_resampled_arrays_with_ties():
    rng = np.random.default_rng(7)
    images = 300
    groups = rng.integers(0, 40, images).astype(str)
    truth = (rng.random((images, 2)) < [0.3, 0.05]).astype(int)
    prob = np.round(np.clip(truth * 0.3 + rng.random((images, 2)) * 0.7, 0, 1), 1)  # many ties
    counts = bootstrap_counts(len(np.unique(groups)), 6, seed=11)
    aucs, _ = bootstrap_draws(truth, prob, groups, counts, labels=["any", "epidural"])
    for draw, row in enumerate(counts):
        resampled_truth, resampled_prob = materialise(row, groups, truth, prob)
        for label in range(2):
            if resampled_truth[:, label].min() == resampled_truth[:, label].max():
                assert np.isnan(aucs[draw, label])
            else:
                assert aucs[draw, label] == pytest.approx(
                    roc_auc_score(resampled_truth[:, label], resampled_prob[:, label]), abs=1e-12
                )


def test_weighted_auc_equals_sklearn_sample_weight():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 50)
    score = np.round(rng.random(50), 1)
    weights = rng.random((3, 50)) * 3
    for row, auc in zip(weights, weighted_auc(truth, score, weights)):
        assert auc == pytest.approx(roc_auc_score(truth, score, sample_weight=row), abs=1e-12)


def test_bootstrap_counts_follow_the_documented_draws():
    counts = bootstrap_counts(5, 4, seed=42)
    picks = np.random.default_rng(42).integers(0, 5, size=(4, 5))
    np.testing.assert_array_equal(counts, [np.bincount(row, minlength=5) for row in picks])
    assert (counts.sum(axis=1) == 5).all()
    with pytest.raises(ValueError, match="at least one patient and one draw. Received: 0 patients"):
        bootstrap_counts(0, 4, seed=0)


def synthetic(images=600, patients=80, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.array([f"ID_{code:04x}" for code in rng.integers(0, patients, images)])
    truth = (rng.random((images, 6)) < [0.3, 0.05, 0.1, 0.1, 0.1, 0.1]).astype(int)
    prob = np.clip(truth * 0.35 + rng.random((images, 6)) * 0.65, 0, 1)
    return truth, prob, groups


def test_bootstrap_is_deterministic_by_seed_and_ignores_row_order():
    truth, prob, groups = synthetic()
    first = bootstrap_intervals(truth, prob, groups, draws=200, seed=5)
    assert bootstrap_intervals(truth, prob, groups, draws=200, seed=5) == first
    assert bootstrap_intervals(truth, prob, groups, draws=200, seed=6) != first
    # Patients are numbered in sorted key order, so shuffling the rows resamples the same patients.
    order = np.random.default_rng(0).permutation(len(truth))
    shuffled = bootstrap_intervals(truth[order], prob[order], groups[order], draws=200, seed=5)
    for label, interval in first["auc_ci95"].items():
        assert shuffled["auc_ci95"][label] == pytest.approx(interval, rel=1e-12)
    assert shuffled["weighted_log_loss_ci95"] == pytest.approx(first["weighted_log_loss_ci95"], rel=1e-12)


def test_interval_brackets_the_full_set_values():
    truth, prob, groups = synthetic()
    result = bootstrap_intervals(truth, prob, groups, draws=500, seed=0)
    for index, (label, (low, high)) in enumerate(result["auc_ci95"].items()):
        assert low < roc_auc_score(truth[:, index], prob[:, index]) < high, label
    per_label = [log_loss(truth[:, index], prob[:, index]) for index in range(6)]
    low, high = result["weighted_log_loss_ci95"]
    assert low < (2 * per_label[0] + sum(per_label[1:])) / 7 < high


def test_interval_is_none_below_the_minimum_of_valid_draws_and_for_an_undefined_auc():
    # 20 patients of one image each; only patient 0 is positive for column 0, and column 1 has no positive.
    groups = np.arange(20)
    truth = np.zeros((20, 2), dtype=int)
    truth[0, 0] = 1
    prob = np.linspace(0.05, 0.95, 40).reshape(20, 2)
    draws, seed = 200, 9
    # Column 0 has both classes in a draw exactly when patient 0 is drawn (the other 19 are negatives);
    # counted here from the documented draws, independently of the code under test.
    picks = np.random.default_rng(seed).integers(0, 20, size=(draws, 20))
    valid = int((picks == 0).any(axis=1).sum())
    assert 0 < valid < draws
    kwargs = dict(draws=draws, seed=seed, labels=["any", "epidural"])
    result = bootstrap_intervals(truth, prob, groups, min_valid=valid, **kwargs)
    assert result["valid_draws"] == {"any": valid, "epidural": 0}
    assert result["auc_ci95"]["any"] is not None
    assert result["auc_ci95"]["epidural"] is None
    assert bootstrap_intervals(truth, prob, groups, min_valid=valid + 1, **kwargs)["auc_ci95"]["any"] is None


def test_percentile_interval_by_hand():
    # 0..100 and a NaN (an undefined draw, skipped): the 2.5th and 97.5th percentiles of 101 evenly spaced
    # values are 2.5 and 97.5.
    values = np.r_[np.arange(101.0), np.nan]
    assert percentile_interval(values) == pytest.approx([2.5, 97.5])
    # Linear interpolation: positions 0.025 * 3 = 0.075 and 2.925 in [0, 10, 20, 30] -> 0.75 and 29.25.
    assert percentile_interval(np.array([30.0, 0.0, 20.0, 10.0]), min_valid=4) == pytest.approx([0.75, 29.25])
    assert percentile_interval(np.array([30.0, 0.0, 20.0, 10.0]), min_valid=5) is None


def test_groups_must_match_the_images():
    truth, prob, groups = synthetic(images=10)
    with pytest.raises(ValueError, match=r"one patient key per image, shape \(10,\). Received: \(9,\)"):
        bootstrap_intervals(truth, prob, groups[:9])
