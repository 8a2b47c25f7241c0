"""Decision rules that pick a policy of the front, and the gate that guards the served champion."""
import numpy as np

from recmoo_dag.decision import bound_failures, choose, gate, ndcg_lower_bound, nearest_to_bounds
from recmoo_dag.objectives import JUDGED

K = 10  # the list length the messages name ("ndcg@10")
WEIGHTS = dict.fromkeys(JUDGED, 1.0)


# ------------------------------------------------------------------------------------ decision rules
# Columns: objectives.JUDGED (ndcg, ild, novelty, coverage, personalization). Reference = accuracy-only.
ACCURACY_ONLY = np.array([0.100, 0.50, 3.0, 0.20, 0.50])
FRONT_F = np.array([
    [0.1000, 0.50, 3.0, 0.20, 0.50],  # 0: accuracy-only
    [0.0990, 0.60, 3.2, 0.35, 0.60],  # 1: -1% NDCG, more of everything
    [0.0970, 0.70, 3.5, 0.50, 0.70],  # 2: -3% NDCG: outside the 0.98 bound
    [0.0985, 0.65, 3.1, 0.30, 0.55],  # 3: -1.5% NDCG, the most ILD among the feasible
])


def test_constrained_rule_maximizes_coverage_within_the_ndcg_bound():
    index, why = choose("constrained", FRONT_F, ACCURACY_ONLY, {"ndcg": 0.98}, "coverage", WEIGHTS, K)
    assert index == 1 and "max coverage@10 among 3 policies" in why
    # Another objective and a second bound: ILD >= 1.25 x accuracy-only leaves policies 2 and 3.
    index, _ = choose("constrained", FRONT_F, ACCURACY_ONLY, {"ild": 1.25}, "ndcg", WEIGHTS, K)
    assert index == 3


def test_ndcg_bound_at_a_confidence_level_needs_a_margin_for_noise():
    rng = np.random.default_rng(0)
    accuracy_only = (rng.random(900) < 0.1) / np.log2(2 + rng.integers(0, 10, 900))  # accuracy-only per user
    steady = accuracy_only * 0.99  # -1% for every user: little noise in the difference
    noisy = accuracy_only.copy()
    lose = np.flatnonzero(accuracy_only > 0)[:6]
    noisy[lose] = 0.0  # -1% on average too, in a few users' hits: a noisy difference
    noisy *= accuracy_only.mean() * 0.99 / noisy.mean()
    lower = ndcg_lower_bound(np.stack([steady, noisy]), accuracy_only, 0.95)
    assert lower[0] >= 0.98 * accuracy_only.mean() > lower[1]
    np.testing.assert_allclose(ndcg_lower_bound(np.stack([steady, noisy]), accuracy_only, 0.5), [steady.mean(), noisy.mean()])
    F = np.tile(ACCURACY_ONLY, (2, 1))
    F[:, 0] = [steady.mean(), noisy.mean()]
    F[1, 3] = 0.9  # the noisy policy has far more coverage: picked on point estimates, not at 95%
    point, _ = choose("constrained", F, np.r_[accuracy_only.mean(), ACCURACY_ONLY[1:]], {"ndcg": 0.98}, "coverage", WEIGHTS,
                      K)
    confident, why = choose("constrained", F, np.r_[accuracy_only.mean(), ACCURACY_ONLY[1:]], {"ndcg": 0.98},
                            "coverage", WEIGHTS, K, lower)
    assert (point, confident) == (1, 0) and "lower confidence bound" in why


def test_every_rule_says_so_when_no_policy_meets_the_bounds():
    for rule in ("constrained", "asf", "pseudo_weights", "knee"):
        index, why = choose(rule, FRONT_F, ACCURACY_ONLY, {"ndcg": 1.01}, "coverage", WEIGHTS, K)
        assert index is None and "no policy of the front meets the bounds (ndcg@10 >= 1.01" in why


def test_with_each_bound_met_by_a_different_policy_the_nearest_one_shows_the_joint_miss():
    bounds = {"ndcg": 0.99, "ild": 1.35}  # policies 0 and 1 meet the first only, policy 2 the second only
    index, _ = choose("constrained", FRONT_F, ACCURACY_ONLY, bounds, "coverage", WEIGHTS, K)
    assert index is None
    # Largest misses: 0.35, 0.15, 0.02 (NDCG 0.97 x), 0.05 (ILD 1.3 x).
    assert nearest_to_bounds(FRONT_F, ACCURACY_ONLY, bounds) == 2
    lower = np.array([0.1, 0.099, 0.09, 0.0985])  # NDCG judged by its lower bound: policy 2 misses by 0.09
    assert nearest_to_bounds(FRONT_F, ACCURACY_ONLY, bounds, lower) == 3


def test_asf_and_pseudo_weights_follow_the_weights():
    for rule in ("asf", "pseudo_weights"):
        on_ndcg, _ = choose(rule, FRONT_F, ACCURACY_ONLY, {}, "coverage", {"ndcg": 1.0}, K)
        on_coverage, _ = choose(rule, FRONT_F, ACCURACY_ONLY, {}, "coverage", {"coverage": 1.0}, K)
        assert (on_ndcg, on_coverage) == (0, 2), rule
    # Within the bound the coverage-minded choice moves to the best feasible trade-off.
    index, _ = choose("asf", FRONT_F, ACCURACY_ONLY, {"ndcg": 0.98}, "coverage", {"coverage": 1.0}, K)
    assert index == 1


def test_knee_rule_finds_the_bend_of_a_two_objective_front():
    # NDCG against coverage (other objectives constant): flat, then a sharp bend at index 5.
    coverage_axis = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7])
    ndcg_axis = np.array([1.0, 0.998, 0.996, 0.994, 0.992, 0.99, 0.8, 0.6, 0.4, 0.2])
    F = np.column_stack([ndcg_axis, np.full(10, 0.5), np.full(10, 3.0), coverage_axis, np.full(10, 0.5)])
    index, why = choose("knee", F, F[0], {}, "coverage", WEIGHTS, K)
    assert index == 5, why


# ------------------------------------------------------------------------------------------- gate
A = dict(zip(JUDGED, [0.100, 0.50, 3.0, 0.20, 0.50]))
B = dict(zip(JUDGED, [0.099, 0.60, 3.2, 0.35, 0.60]))
TOL = dict.fromkeys(JUDGED, 0.02)


def test_gate_first_deployment_needs_only_the_bounds():
    assert gate(B, A, None, {"ndcg": 0.98}, TOL, K).promoted
    refused = gate(B, A, None, {"ndcg": 0.995}, TOL, K)
    assert not refused.promoted
    assert refused.reason == "bounds fail on test: ndcg@10 0.0990 < 0.995 x accuracy-only 0.1000; nothing deployed"


def test_gate_keeps_the_champion_on_a_regression_beyond_tolerance():
    worse = {**B, "coverage": 0.30}  # -14% coverage vs B, beyond 2%
    decision = gate(worse, A, B, {"ndcg": 0.98}, TOL, K, champion_version="v0003")
    assert not decision.promoted
    assert "coverage@10 0.3000 < champion 0.3500 - 2%" in decision.reason and "champion v0003 kept" in decision.reason
    within = {**B, "coverage": 0.345, "ild": 0.65}  # -1.4% coverage: inside the tolerance
    assert gate(within, A, B, {"ndcg": 0.98}, TOL, K, champion_version="v0003").promoted


def test_gate_replaces_a_champion_that_no_longer_meets_the_bounds():
    # On today's test data the champion B has lost accuracy (say the data moved); the candidate has
    # less of everything else but meets the bounds: a bound outranks the regression tolerances.
    stale = {**B, "ndcg": 0.090}
    decision = gate(A, A, stale, {"ndcg": 0.98}, TOL, K, champion_version="v0004")
    assert decision.promoted
    assert decision.reason == ("bounds hold on test; champion v0004 no longer meets them "
                               "(ndcg@10 0.0900 < 0.98 x accuracy-only 0.1000)")


def test_gate_records_why_nothing_was_chosen_or_published():
    none = gate(None, A, B, {}, TOL, K, "v0002", no_candidate_reason="no policy of the front meets the bounds (x)")
    assert not none.promoted and none.reason == "no policy of the front meets the bounds (x); champion v0002 kept"
    same = gate(B, A, B, {}, TOL, K, "v0002", identical=True)
    assert not same.promoted and "nothing to publish" in same.reason


def test_bound_failures_name_each_missed_bound_with_its_numbers():
    assert bound_failures(B, A, {"ndcg": 0.98, "ild": 1.25}, 5) == ["ild@5 0.6000 < 1.25 x accuracy-only 0.5000"]
    assert bound_failures(B, A, {"novelty": 1.0, "personalization": 1.0}, 5) == []
