"""Exposure prices: the subgradient solve against the exact LP (HiGHS) on instances small enough for it."""
import numpy as np
import pytest

from recmoo_dag.exposure import capacities, lp_prices, solve_prices, top_k_counts
from recmoo_dag.metrics import exposure_gini_of_counts, tail_share_of_counts


def popular_heavy(seed: int, n_users=200, n_candidates=30, n_items=90):
    """Candidates drawn by a Zipf-like popularity and scores that favour popular items: the
    accuracy-only top-k piles onto a few items, as real logs do."""
    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = np.stack([rng.choice(np.arange(1, n_items + 1), n_candidates, replace=False, p=weight / weight.sum())
                      for _ in range(n_users)])
    scores = rng.normal(size=items.shape) + 2.0 * weight[items - 1] / weight.max()
    return scores, items


@pytest.mark.parametrize("seed", [0, 1])
def test_the_prices_bound_the_lp_optimum_from_both_sides_and_match_its_duals(seed):
    scores, items = popular_heavy(seed)
    k, cap = 10, capacities(len(items), 10, 90, slack=1.5)
    solved = solve_prices(scores, items, cap, k, iterations=400, seed=seed)
    exact, optimum = lp_prices(scores, items, cap, k)
    assert solved.short_lists == 0
    assert solved.primal <= optimum + 1e-6 <= solved.dual + 2e-6  # weak duality, both ways
    assert solved.dual - optimum < 1e-3 * optimum  # the subgradient reached the LP optimum
    assert solved.gap < 0.03
    assert np.corrcoef(exact[1:], solved.prices[1:])[0, 1] > 0.99
    assert np.abs(exact - solved.prices).max() < 0.1 * exact.max()


def test_prices_pull_the_lists_under_the_capacities_and_leave_padding_out():
    scores, items = popular_heavy(2)
    items[:, -3:] = 0  # padding columns: item 0, never listed
    k, cap = 10, capacities(len(items), 10, 90, slack=1.5)
    before, _ = top_k_counts(np.where(items == 0, -1e9, scores), items, np.zeros(91), k)
    solved = solve_prices(scores, items, cap, k, iterations=400)
    after, _ = top_k_counts(np.where(items == 0, -1e9, scores), items, solved.prices, k)
    assert before.max() > 3 * cap[1] and after.max() <= 1.2 * cap[1]
    assert after[0] == 0 and solved.prices[0] == 0
    assert exposure_gini_of_counts(after) < 0.5 * exposure_gini_of_counts(before)  # the tail gets exposure
    assert (solved.prices[after < cap] < 1e-9).sum() >= 0.5 * (after < cap).sum()  # unsaturated items cost ~0


def test_the_solve_is_deterministic_for_a_seed():
    scores, items = popular_heavy(3)
    cap = capacities(len(items), 10, 90, slack=2.0)
    first, again = (solve_prices(scores, items, cap, 10, iterations=100, seed=7) for _ in range(2))
    assert np.array_equal(first.prices, again.prices) and first.primal == again.primal


def test_gini_and_tail_share_of_known_exposures():
    assert exposure_gini_of_counts(np.array([0, 5, 5, 5, 5])) == pytest.approx(0.0)
    assert exposure_gini_of_counts(np.array([0, 0, 0, 0, 8])) == pytest.approx(0.75)  # (n - 1) / n
    assert exposure_gini_of_counts(np.array([[0, 1, 3], [0, 2, 2]])) == pytest.approx([0.25, 0.0])
    train = np.array([0, 50, 40, 30, 20, 10, 9, 8, 7, 6, 5])  # items 1 and 2: the top 20 %
    assert tail_share_of_counts(np.array([0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 4]), train) == pytest.approx(0.5)
