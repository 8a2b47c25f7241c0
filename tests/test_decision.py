"""Decision rules that pick a policy of the front, and the gate that guards the served champion."""
import numpy as np

from recmoo_dag.decision import bound_failures, choose, gate, nearest_to_bounds
from recmoo_dag.objectives import JUDGED
from recmoo_dag.uncertainty import Bootstrap, Ratio

K = 10  # the list length the messages name ("ndcg@10")
WEIGHTS = dict.fromkeys(JUDGED, 1.0)


# ------------------------------------------------------------------------------------ decision rules
# Columns: objectives.JUDGED (ndcg, ild, novelty, coverage, personalization); ratios to accuracy-only.
FRONT_F = np.array([
    [1.000, 1.0, 1.00, 1.00, 1.0],  # 0: accuracy-only
    [0.990, 1.2, 1.07, 1.75, 1.2],  # 1: -1% NDCG, more of everything
    [0.970, 1.4, 1.17, 2.50, 1.4],  # 2: -3% NDCG: outside the 0.98 bound
    [0.985, 1.3, 1.03, 1.50, 1.1],  # 3: -1.5% NDCG, the most ILD among the feasible
])


def lower_bounds(F):
    """Point estimates taken as their own lower bounds: what a rule sees at 50% confidence."""
    return {name: F[:, j] for j, name in enumerate(JUDGED)}


def test_constrained_rule_maximizes_coverage_within_the_ndcg_bound():
    order, why = choose("constrained", FRONT_F, lower_bounds(FRONT_F), {"ndcg": 0.98}, "coverage", WEIGHTS, K, 0.5)
    assert order.tolist()[0] == 1 and sorted(order.tolist()) == [0, 1, 3]
    assert "max coverage@10 among 3 policies with ndcg@10 >= 0.98 x accuracy-only (on point estimates)" in why
    # Another objective and a second bound: ILD >= 1.25 x accuracy-only leaves policies 2 and 3.
    order, _ = choose("constrained", FRONT_F, lower_bounds(FRONT_F), {"ild": 1.25}, "ndcg", WEIGHTS, K, 0.5)
    assert order.tolist() == [3, 2]
    # No bounds at all: every policy qualifies, and the rule alone orders them.
    order, why = choose("constrained", FRONT_F, {}, {}, "coverage", WEIGHTS, K, 0.95)
    assert order.tolist() == [2, 1, 3, 0] and "among 4 policies with no bounds" in why


def test_a_bound_judged_at_a_confidence_level_needs_a_margin_for_noise():
    rng = np.random.default_rng(0)
    users = 900
    accuracy_only = (rng.random(users) < 0.1) / np.log2(2 + rng.integers(0, 10, users))  # per user
    steady = accuracy_only * 0.99  # -1% for every user: little noise in the paired ratio
    noisy = accuracy_only.copy()
    noisy[np.flatnonzero(accuracy_only > 0)[:6]] = 0.0  # -1% on average too, in a few users' hits
    noisy *= accuracy_only.mean() * 0.99 / noisy.mean()
    boot = Bootstrap(users, 1000, seed=1)
    lower = boot.ratio_lower(np.stack([steady, noisy]), accuracy_only, 0.95)
    assert lower[0] >= 0.98 > lower[1]
    F = np.tile(FRONT_F[0], (2, 1))
    F[:, 0] = 0.99
    F[1, 3] = 3.0  # the noisy policy has far more coverage: picked on point estimates, not at 95%
    point, _ = choose("constrained", F, lower_bounds(F), {"ndcg": 0.98}, "coverage", WEIGHTS, K, 0.5)
    at_95 = {**lower_bounds(F), "ndcg": lower}
    confident, why = choose("constrained", F, at_95, {"ndcg": 0.98}, "coverage", WEIGHTS, K, 0.95)
    assert (point[0], confident.tolist()) == (1, [0]) and "(at 95% confidence)" in why


def test_every_rule_says_so_when_no_policy_meets_the_bounds():
    for rule in ("constrained", "asf", "pseudo_weights", "knee"):
        order, why = choose(rule, FRONT_F, lower_bounds(FRONT_F), {"ndcg": 1.01}, "coverage", WEIGHTS, K, 0.95)
        assert len(order) == 0 and "no policy of the front meets the bounds (ndcg@10 >= 1.01" in why


def test_with_each_bound_met_by_a_different_policy_the_nearest_one_shows_the_joint_miss():
    bounds = {"ndcg": 0.99, "ild": 1.35}  # policies 0 and 1 meet the first only, policy 2 the second only
    order, _ = choose("constrained", FRONT_F, lower_bounds(FRONT_F), bounds, "coverage", WEIGHTS, K, 0.5)
    assert len(order) == 0
    # Largest misses: 0.35, 0.15, 0.02 (NDCG 0.97 x), 0.05 (ILD 1.3 x).
    assert nearest_to_bounds(lower_bounds(FRONT_F), bounds) == 2
    wider = {**lower_bounds(FRONT_F), "ndcg": np.array([1.0, 0.99, 0.90, 0.985])}  # policy 2 now misses by 0.09
    assert nearest_to_bounds(wider, bounds) == 3


def test_asf_and_pseudo_weights_follow_the_weights():
    for rule in ("asf", "pseudo_weights"):
        on_ndcg, _ = choose(rule, FRONT_F, lower_bounds(FRONT_F), {}, "coverage", {"ndcg": 1.0}, K, 0.5)
        on_coverage, _ = choose(rule, FRONT_F, lower_bounds(FRONT_F), {}, "coverage", {"coverage": 1.0}, K, 0.5)
        assert (on_ndcg[0], on_coverage[0]) == (0, 2), rule
    # Within the bound the coverage-minded choice moves to the best feasible trade-off.
    order, _ = choose("asf", FRONT_F, lower_bounds(FRONT_F), {"ndcg": 0.98}, "coverage", {"coverage": 1.0}, K, 0.5)
    assert order[0] == 1


def test_knee_rule_finds_the_bend_of_a_two_objective_front():
    # NDCG against coverage (other objectives constant): flat, then a sharp bend at index 5.
    coverage_axis = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7])
    ndcg_axis = np.array([1.0, 0.998, 0.996, 0.994, 0.992, 0.99, 0.8, 0.6, 0.4, 0.2])
    F = np.column_stack([ndcg_axis, np.full(10, 0.5), np.full(10, 3.0), coverage_axis, np.full(10, 0.5)])
    order, why = choose("knee", F, lower_bounds(F), {}, "coverage", WEIGHTS, K, 0.5)
    assert order[0] == 5, why


# ------------------------------------------------------------------------------------------- gate
def ratios(values, spread=0.01):
    """Ratios with an interval of +-spread around each value; the one-sided bound at its low end."""
    return {name: Ratio(v, v - spread, v + spread, v - spread) for name, v in zip(JUDGED, values)}


CANDIDATE = ratios([1.00, 1.2, 1.07, 1.75, 1.2])  # over accuracy-only on test
SAME_AS_CHAMPION = ratios([1.0] * len(JUDGED))
TOL = dict.fromkeys(JUDGED, 0.02)


def test_gate_first_deployment_needs_only_the_bounds():
    assert gate(CANDIDATE, None, [], {"ndcg": 0.98}, TOL, K).promoted
    refused = gate(CANDIDATE, None, [], {"ndcg": 0.995}, TOL, K)
    assert not refused.promoted
    assert refused.reason == ("bounds fail on test: ndcg@10 1.000x [0.990, 1.010] x accuracy-only: lower bound 0.990 "
                              "< 0.995; nothing deployed")


def test_gate_keeps_the_champion_unless_non_inferiority_to_it_is_shown():
    worse = {**SAME_AS_CHAMPION, "coverage": Ratio(0.99, 0.96, 1.02, 0.965)}  # could be 3.5% worse: beyond 2%
    decision = gate(CANDIDATE, worse, [], {"ndcg": 0.98}, TOL, K, champion_version="v0003")
    assert not decision.promoted
    assert "coverage@10 vs champion 0.990x [0.960, 1.020]: lower bound 0.965 < 0.98" in decision.reason
    assert "champion v0003 kept" in decision.reason
    within = {**SAME_AS_CHAMPION, "coverage": Ratio(0.995, 0.985, 1.005, 0.987)}  # bounded within 2%
    assert gate(CANDIDATE, within, [], {"ndcg": 0.98}, TOL, K, champion_version="v0003").promoted


def test_gate_replaces_a_champion_that_no_longer_meets_the_bounds():
    # On today's test data the champion has lost accuracy (say the data moved); the candidate has less
    # of everything else but meets the bounds: a bound outranks the regression tolerances.
    champion_misses = bound_failures(ratios([0.9, 1.2, 1.07, 1.75, 1.2]), {"ndcg": 0.98}, K)
    decision = gate(CANDIDATE, ratios([1.1, 0.8, 0.9, 0.6, 0.8]), champion_misses, {"ndcg": 0.98}, TOL, K,
                    champion_version="v0004")
    assert decision.promoted
    assert decision.reason == ("bounds hold on test; champion v0004 no longer meets them "
                               "(ndcg@10 0.900x [0.890, 0.910] x accuracy-only: lower bound 0.890 < 0.98)")


def test_gate_records_why_nothing_was_chosen_or_published():
    none = gate(None, SAME_AS_CHAMPION, [], {}, TOL, K, "v0002",
                no_candidate_reason="no policy of the front meets the bounds (x)")
    assert not none.promoted and none.reason == "no policy of the front meets the bounds (x); champion v0002 kept"
    same = gate(CANDIDATE, SAME_AS_CHAMPION, [], {}, TOL, K, "v0002", identical=True)
    assert not same.promoted and "nothing to publish" in same.reason


def test_bound_failures_name_each_missed_bound_with_its_numbers():
    assert bound_failures(CANDIDATE, {"ndcg": 0.98, "ild": 1.25}, 5) == [
        "ild@5 1.200x [1.190, 1.210] x accuracy-only: lower bound 1.190 < 1.25"]
    assert bound_failures(CANDIDATE, {"novelty": 1.0, "personalization": 1.0}, 5) == []


def test_constrained_rule_ranks_by_a_catalogue_figure_lowest_gini_or_highest_tail_share_first():
    gini, tail = np.array([0.84, 0.80, 0.60, 0.75]), np.array([0.30, 0.28, 0.50, 0.40])
    order, why = choose("constrained", FRONT_F, lower_bounds(FRONT_F), {"ndcg": 0.98}, "exposure_gini", WEIGHTS, K,
                        0.5, gini)
    assert order.tolist() == [3, 1, 0] and why.startswith("min exposure_gini@10 among 3 policies")  # 2 is infeasible
    order, why = choose("constrained", FRONT_F, lower_bounds(FRONT_F), {"ndcg": 0.98}, "tail_share", WEIGHTS, K,
                        0.5, tail)
    assert order.tolist() == [3, 0, 1] and why.startswith("max tail_share@10 among 3 policies")
