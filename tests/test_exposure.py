"""Exposure prices: the subgradient solve against the exact LP (HiGHS) on instances small enough for it."""
import re

import numpy as np
import pytest

from recmoo_dag.exposure import capacities, floors, lp_prices, solve_prices, top_k_counts
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
    solved = solve_prices(scores, items, k, cap=cap, iterations=400, seed=seed)
    exact, optimum = lp_prices(scores, items, k, cap=cap)
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
    solved = solve_prices(scores, items, k, cap=cap, iterations=400)
    after, _ = top_k_counts(np.where(items == 0, -1e9, scores), items, solved.prices, k)
    assert before.max() > 3 * cap[1] and after.max() <= 1.2 * cap[1]
    assert after[0] == 0 and solved.prices[0] == 0
    assert exposure_gini_of_counts(after) < 0.5 * exposure_gini_of_counts(before)  # the tail gets exposure
    assert (solved.prices[after < cap] < 1e-9).sum() >= 0.5 * (after < cap).sum()  # unsaturated items cost ~0


@pytest.mark.parametrize("seed", [0, 1])
def test_floor_subsidies_match_the_lp_and_list_every_item_its_floor(seed):
    scores, items = popular_heavy(seed, n_users=80, n_items=300)  # 800 slots, 300 items: a long tail
    k, floor = 10, floors(items, 300, 2.0)
    before, _ = top_k_counts(scores, items, np.zeros(301), k)
    solved = solve_prices(scores, items, k, floor=floor, iterations=400, seed=seed)
    exact, optimum = lp_prices(scores, items, k, floor=floor)
    assert (solved.prices <= 0).all() and solved.prices[0] == 0  # subsidies only, padding untouched
    # The floors' duals are not unique (many items sit exactly at their floor), so the prices are
    # judged by the dual bound and the lists they give, not compared with HiGHS's one vertex.
    assert optimum <= solved.dual + 2e-6 and solved.dual - optimum < 3e-3 * optimum
    assert (exact <= 1e-9).all()
    # The repair lifts every item to its floor by the cheapest swaps: a feasible lower bound, a stated gap.
    assert solved.below_floor == 0 and solved.primal <= optimum + 1e-6 and solved.gap < 0.01
    after, _ = top_k_counts(scores, items, solved.prices, k)
    assert (before[1:] < floor[1:]).sum() > 50  # the accuracy-only lists leave many items under 2
    assert (after[1:] < floor[1:] - 1).sum() <= 2  # the LP's lists, up to ties, meet the floors
    assert (after[1:] > 0).mean() > (before[1:] > 0).mean()


def test_the_solve_is_deterministic_for_a_seed():
    scores, items = popular_heavy(3)
    cap = capacities(len(items), 10, 90, slack=2.0)
    first, again = (solve_prices(scores, items, 10, cap=cap, iterations=100, seed=7) for _ in range(2))
    assert np.array_equal(first.prices, again.prices) and first.primal == again.primal


def test_gini_and_tail_share_of_known_exposures():
    assert exposure_gini_of_counts(np.array([0, 5, 5, 5, 5])) == pytest.approx(0.0)
    assert exposure_gini_of_counts(np.array([0, 0, 0, 0, 8])) == pytest.approx(0.75)  # (n - 1) / n
    assert exposure_gini_of_counts(np.array([[0, 1, 3], [0, 2, 2]])) == pytest.approx([0.25, 0.0])
    train = np.array([0, 50, 40, 30, 20, 10, 9, 8, 7, 6, 5])  # items 1 and 2: the top 20 %
    assert tail_share_of_counts(np.array([0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 4]), train) == pytest.approx(0.5)


def test_the_stage_writes_each_windows_prices_and_figures_byte_identically(project, tmp_path):
    """`recmoo exposure` on a tiny project: both price vectors of each window, each solve's bounds,
    what each does to the window's opening lists at weight 1; the same bytes on a second run."""
    import json

    from recmoo_dag.exposure import load_window_prices
    from recmoo_dag.stages import exposure
    from tests.pareto_support import SMALL, make_pareto_project

    make_pareto_project(tmp_path)
    params = project({**SMALL, "exposure": {"floor": 4}})
    exposure.main(params)
    first = (tmp_path / params.exposure.prices).read_bytes()
    windows, report = load_window_prices(params.exposure.prices), json.loads((tmp_path / params.exposure.metrics).read_text())
    assert set(windows) == {"valid", "test"} and not np.array_equal(windows["valid"].cap, windows["test"].cap)
    for window, prices in windows.items():
        assert (prices.cap >= 0).all() and (prices.floor <= 0).all() and prices.cap.any() and prices.floor.any()
        assert prices.settings == {"k": 5, "cap_slack": 2.0, "floor": 4.0, "iterations": 200, "seed": params.seed}
        figures = report[window]["at_weight_1"]
        assert figures["floor"]["coverage@5"] > figures["accuracy_only"]["coverage@5"]
        assert figures["cap"]["exposure_gini@5"] < figures["accuracy_only"]["exposure_gini@5"]
        assert report[window]["solves"]["cap"]["gap"] is not None and report[window]["solves"]["cap"]["gap"] < 0.05
    exposure.main(params)
    assert (tmp_path / params.exposure.prices).read_bytes() == first


def test_a_windows_prices_come_from_its_opening_lists_alone(project, tmp_path):
    """Each user's first case of a window is ranked from the history before the window; a later
    case's candidates leave out what its user took earlier in the window. Prices solved from the
    opening lists alone cannot move when later cases change, so no held-out item reaches them."""
    from recmoo_dag.candidates import load_candidates
    from recmoo_dag.exposure import opening_cases, window_prices
    from tests.pareto_support import make_pareto_project

    make_pareto_project(tmp_path)
    params = project({})
    candidates = load_candidates(params.candidates.path)
    users = candidates["test_users"]
    opening = opening_cases(users)
    assert np.array_equal(users[opening], np.unique(users)) and len(opening) < len(users)
    assert np.array_equal(opening_cases(np.array([3, 3, 5, 9, 9, 9])), [0, 2, 3])
    later = np.setdiff1d(np.arange(len(users)), opening)
    moved = {**candidates, "test_scores": candidates["test_scores"].copy()}
    moved["test_scores"][later] = np.random.default_rng(0).normal(size=(len(later), moved["test_scores"].shape[1]))
    solve = {"n_items": int(candidates["test_items"].max()), "k": 5, "cap_slack": 2.0, "floor": 2, "iterations": 50,
             "seed": 0}
    before, after = window_prices(candidates, **solve)["test"], window_prices(moved, **solve)["test"]
    assert np.array_equal(before.cap, after.cap) and np.array_equal(before.floor, after.floor)


def test_a_floor_the_lists_cannot_hold_is_refused_by_name():
    """Floors asking for more slots than the lists have: subsidies that only grow, refused with the
    largest floor that fits."""
    from recmoo_dag.errors import InputError
    from recmoo_dag.exposure import solve_exposure

    scores, items = popular_heavy(0, n_users=20)  # 20 lists of 10: 200 slots for 90 items
    with pytest.raises(InputError, match=r"exposure.floor 3: the floors ask for 2\d\d list slots, but the 20 lists "
                                         r"hold 200; lower it to at most 2.22"):
        solve_exposure(scores, items, 90, 10, cap_slack=2.0, floor=3, iterations=10, seed=0)
    assert solve_exposure(scores, items, 90, 10, cap_slack=2.0, floor=2, iterations=10, seed=0).floor.any()


@pytest.mark.parametrize(("content", "reason"), [
    (None, "no exposure prices here (run `recmoo exposure`)"),
    ("{\"valid\": ", "not JSON"),
    ("[]", "not the exposure stage's prices, one set per window"),
    ("{\"valid\": {\"cap\": [0.0], \"floor\": [0.0], \"settings\": {}, \"solves\": {}}}", "KeyError: 'test'"),
    ("{\"valid\": {\"cap\": [0.0]}, \"test\": {\"cap\": [0.0]}}", "KeyError: 'floor'"),
])
def test_a_prices_file_that_is_missing_or_broken_is_refused_naming_it(tmp_path, content, reason):
    """Bad input: the error names the file, what is wrong with it and how to rebuild it."""
    from recmoo_dag.errors import InputError
    from recmoo_dag.exposure import load_window_prices

    path = tmp_path / "metrics" / "prices.json"
    if content is not None:
        path.parent.mkdir()
        path.write_text(content)
    with pytest.raises(InputError) as caught:
        load_window_prices(path)
    assert str(caught.value).startswith(f"{path}: ") and reason in str(caught.value)
    assert "recmoo exposure" in str(caught.value)


def test_a_versions_prices_without_their_vectors_are_refused_naming_the_file(tmp_path):
    from recmoo_dag.errors import InputError
    from recmoo_dag.exposure import load_prices

    path = tmp_path / "exposure.json"
    path.write_text("{\"settings\": {}, \"solves\": {}, \"cap\": [0.0]}")
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: not a version's exposure prices \(KeyError: 'floor'\)"):
        load_prices(path)
