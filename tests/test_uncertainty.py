"""Paired intervals over users: per-user means, a seeded bootstrap, ratios that survive zeros."""
import numpy as np
import pytest

from recmoo_dag.uncertainty import Bootstrap, Ratio, per_user, ratio


def test_each_user_weighs_once_whatever_their_number_of_baskets():
    values = np.array([1.0, 0.0, 0.0, 0.0, 0.5])  # user 0 one basket, user 2 three, user 1 none, user 3 one
    users = np.array([0, 2, 2, 2, 3])
    means = per_user(values, users, 4)
    np.testing.assert_array_equal(means[[0, 2, 3]], [1.0, 0.0, 0.5])
    assert np.isnan(means[1])
    both = per_user(np.stack([values, 2 * values]), users, 4)  # policies on a leading axis
    np.testing.assert_array_equal(both[1, [0, 2, 3]], [2.0, 0.0, 1.0])


def test_the_bootstrap_is_seeded_and_its_interval_agrees_with_the_t_interval():
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 2.0, 2000)
    boot = Bootstrap(2000, 2000, seed=4)
    np.testing.assert_array_equal(boot.weights, Bootstrap(2000, 2000, seed=4).weights)
    assert not np.array_equal(boot.weights, Bootstrap(2000, 2000, seed=5).weights)
    assert (boot.weights.sum(axis=1) == 2000).all()  # every replicate draws U users
    low, high = boot.interval(values, 0.95)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))  # many users: the mean is near normal
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_pairing_removes_what_the_users_share():
    rng = np.random.default_rng(1)
    difficulty = rng.lognormal(0, 1, 500)  # users differ a lot; the policy costs each 1%
    boot = Bootstrap(500, 1000, seed=0)
    low, high = boot.ratio_interval(0.99 * difficulty, difficulty, 0.95)
    assert low == pytest.approx(0.99) and high == pytest.approx(0.99)
    unpaired_low, unpaired_high = boot.interval(difficulty, 0.95) / difficulty.mean()
    assert unpaired_high - unpaired_low > 0.1  # the same data, not paired: a +-5% interval


def test_a_ratio_reports_its_interval_and_its_one_sided_bound():
    rng = np.random.default_rng(2)
    draws = rng.normal(1.0, 0.02, 4000)
    r = Ratio.of(1.0, 1.0, draws, np.ones(4000), level=0.95, confidence=0.95)
    assert r.low < r.lower < r.value < r.high  # one-sided 95% is inside the two-sided 95%
    assert r.lower == pytest.approx(1 - 1.645 * 0.02, abs=0.003)
    assert r.describe() == f"1.000x [{r.low:.3f}, {r.high:.3f}]"


def test_a_zero_baseline_is_a_tie_or_an_infinite_gain_never_nan():
    np.testing.assert_array_equal(ratio([0.0, 0.2, 0.5], [0.0, 0.0, 0.25]), [1.0, np.inf, 2.0])


def test_pooled_statistics_count_a_user_drawn_twice_twice():
    incidence = np.array([[1, 0, 0], [0, 1, 1]])  # user 0's lists hold item 0, user 1's items 1 and 2
    boot = Bootstrap(2, 50, seed=3)
    covered = boot.pooled(incidence, lambda counts, n_lists: (counts > 0).sum(axis=1))
    drew_both = (boot.weights > 0).all(axis=1)
    np.testing.assert_array_equal(covered[drew_both], 3)
    np.testing.assert_array_equal(covered[~drew_both], np.where(boot.weights[~drew_both, 0] > 0, 1, 2))


def test_the_ratio_a_window_needs_passes_the_test_as_often_as_the_power_says():
    """`Ratio.needed`: a policy truly at that ratio passes the one-sided test on new draws of as many
    users `power` of the time, one at the bound itself almost never."""
    rng = np.random.default_rng(3)
    n_users, bound, confidence = 400, 0.96, 0.95
    baseline = rng.gamma(0.5, 0.2, n_users)  # per-user NDCG: many users near 0, a few high
    policy = baseline * rng.lognormal(-0.02, 0.25, n_users)  # a re-ranker helps some users, hurts others
    boot = Bootstrap(n_users, 400, seed=0)
    measured = Ratio.of(policy.mean() / baseline.mean(), 1.0, boot.means(policy), boot.means(baseline), 0.95, confidence)
    needed = measured.needed(bound, 0.8)
    assert bound + (measured.value - measured.lower) < needed < bound + 0.1
    assert measured.spread == pytest.approx(np.std(boot.means(policy) / boot.means(baseline)))

    def pass_rate(true_ratio: float, trials: int = 300) -> float:
        scaled = policy * true_ratio / (policy.mean() / baseline.mean())  # the same users' spread at that ratio
        passed = 0
        for trial in range(trials):
            drawn = np.random.default_rng([5, trial]).integers(0, n_users, n_users)
            passed += Bootstrap(n_users, 200, seed=trial).ratio_lower(scaled[drawn], baseline[drawn], confidence) >= bound
        return passed / trials

    assert pass_rate(needed) == pytest.approx(0.8, abs=0.08)
    assert pass_rate(bound) < 0.1


def test_a_rows_replicates_are_the_same_bits_alone_or_beside_others():
    """Bootstrap means row by row: a policy's replicates, and so its ratio to itself, never depend on
    the policies measured with it (a bound of exactly 1 must hold for a copy of the baseline)."""
    rng = np.random.default_rng(4)
    values = rng.random((37, 333))  # 37 policies' per-user values
    boot = Bootstrap(333, 211, seed=1)
    together = boot.means(values)
    for row in (0, 17, 36):
        np.testing.assert_array_equal(boot.means(values[row]), together[row])
        np.testing.assert_array_equal(boot.means(values[row:row + 1])[0], together[row])
    assert Ratio.of(1.0, 1.0, together[17], boot.means(values[17]), 0.95, 0.95).lower == 1.0
