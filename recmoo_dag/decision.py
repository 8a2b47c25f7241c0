"""Decision rules that pick a policy of the front, and the gate against the served champion:
each bound a test, judged on paired confidence bounds.

Every objective here is "higher is better" and measured on top-k lists (`objectives.JUDGED`, in
that column order). A policy meets a bound `deploy.min_ratio[j]` when the one-sided lower
confidence bound (at `deploy.confidence`, a paired bootstrap over users: uncertainty.py) of its
ratio to the accuracy-only policy on objective j is at least that ratio: for NDCG@k, 0.96, a
non-inferiority test at a 4% margin; for ILD@k, 1.05, a superiority test. A rule picks among the
policies that meet every bound, and gives its order of preference among them:

- constrained: the feasible policy with the highest `deploy.maximize` (default: maximize catalog
  coverage subject to the bounds; also a catalogue figure: the highest tail share, the lowest
  exposure Gini). Ties go to the higher NDCG.
- asf: the minimum of the augmented achievement scalarizing function
  max_j w_j l_j + rho sum_j w_j l_j, with l_j the loss to the best feasible value of objective j
  normalized by its range on the feasible set (Wierzbicki 1980; augmented Chebyshev form as in
  Miettinen 1999, "Nonlinear Multiobjective Optimization"). A larger weight makes a shortfall
  in that objective cost more.
- pseudo_weights: the policy whose pseudo-weight vector (normalized distance of each objective from
  its worst value; Deb 2001, "Multi-Objective Optimization Using Evolutionary Algorithms")
  is closest to `deploy.weights` (pymoo's `PseudoWeights`).
- knee: a high trade-off point, where a small gain in any objective costs a large loss elsewhere
  (Rachmawati & Srinivasan 2009; pymoo's `HighTradeoffPoints`). If several qualify, or none stands
  out, the one closest to the ideal point (equal-weight ASF) is taken.
After the pick, the others follow in equal-weight ASF order (asf: in its own order).

The gate (`gate`) then judges the chosen policy on the test window against the champion (the
served version, re-evaluated on the same test data): see its docstring. Pure: ratios and
objectives in, decisions out; recmoo_dag/deploy.py measures the policies and publishes. `k` only
names the objectives in messages ("ndcg@10").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recmoo_dag.objectives import JUDGED, LOWER_IS_BETTER, label
from recmoo_dag.uncertainty import Ratio

RHO = 1e-4  # augmentation of the ASF: breaks ties in favour of non-weakly-dominated policies


def _column(name: str) -> int:
    return JUDGED.index(name)


def feasible(lower: dict[str, np.ndarray], min_ratio: dict[str, float], n_policies: int) -> np.ndarray:
    """Which policies meet every bound: lower {objective: (P,) lower confidence bounds of the ratio to
    accuracy-only} -> (P,) bool; every policy when there are no bounds."""
    ok = np.ones(n_policies, dtype=bool)
    for name, ratio in min_ratio.items():
        ok &= lower[name] >= ratio
    return ok


def nearest_to_bounds(lower: dict[str, np.ndarray], min_ratio: dict[str, float]) -> int:
    """The policy whose largest miss of a bound (required ratio - lower bound reached, 0 when met) is
    smallest, ties to the first: when no policy meets every bound, the one nearest to meeting them
    all at once. Several bounds each met by a different policy are no joint success."""
    misses = np.zeros(len(next(iter(lower.values()))))
    for name, ratio in min_ratio.items():
        misses = np.maximum(misses, ratio - lower[name])
    return int(np.argmin(misses))


def normalized_loss(F: np.ndarray) -> np.ndarray:
    """(best - f) / (best - worst) per objective over the rows of F: 0 at the best, 1 at the worst.
    An objective constant over F carries no preference and gets loss 0. (P, m) -> (P, m)."""
    best, worst = F.max(axis=0), F.min(axis=0)
    span = best - worst
    return np.divide(best - F, span, out=np.zeros_like(F), where=span > 0)


def _weight_vector(weights: dict[str, float]) -> np.ndarray:
    w = np.array([weights.get(name, 0.0) for name in JUDGED], dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"deploy.weights must be >= 0 with a positive sum, got {weights}")
    return w / w.sum()


def asf(F: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Augmented achievement scalarizing values (lower is better): (P, m) -> (P,)."""
    weighted = normalized_loss(F) * _weight_vector(weights)  # (P, m)
    return weighted.max(axis=1) + RHO * weighted.sum(axis=1)


def preference(rule: str, F: np.ndarray, maximize: str, weights: dict[str, float],
               catalogue: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The rule's order of preference among F's rows (all feasible), best first, and how it picks.
    catalogue (P,): the rows' values of `maximize` when it is a catalogue figure (objectives.CATALOGUE)."""
    equal = np.argsort(asf(F, dict.fromkeys(JUDGED, 1.0)), kind="stable")
    if rule == "constrained":
        ndcg = _column("ndcg")
        values = F[:, _column(maximize)] if catalogue is None else catalogue
        best = "min" if maximize in LOWER_IS_BETTER else "max"
        key = values if best == "min" else -values
        return np.lexsort((-F[:, ndcg], key)), f"{best} {maximize}"  # the best value, then max NDCG
    if rule == "asf":
        return np.argsort(asf(F, weights), kind="stable"), f"min achievement scalarization, weights {weights}"
    if rule == "pseudo_weights":
        pick, how = _pseudo_weights(F, weights), f"pseudo-weights closest to {weights}"
    elif rule == "knee":
        pick, how = _knee(F)
    else:
        raise ValueError(f"deploy.rule {rule!r} is not one of constrained, asf, pseudo_weights, knee")
    return np.r_[pick, equal[equal != pick]], how


def choose(rule: str, F: np.ndarray, lower: dict[str, np.ndarray], min_ratio: dict[str, float], maximize: str,
           weights: dict[str, float], k: int, confidence: float,
           catalogue: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The policies that meet the bounds, in the rule's order of preference (empty: none does), and
    why. F (P, m) the policies' objectives; lower {objective: (P,)} their ratios' lower bounds;
    catalogue (P,) their values of `maximize` when it is a catalogue figure (exposure_gini: lowest
    first)."""
    ok = np.flatnonzero(feasible(lower, min_ratio, len(F)))
    bounds = ", ".join(f"{label(name, k)} >= {v:g} x accuracy-only" for name, v in min_ratio.items()) or "no bounds"
    judged = f"at {confidence:.0%} confidence" if confidence > 0.5 else "on point estimates"
    if len(ok) == 0:
        return ok, f"no policy of the front meets the bounds ({bounds}, {judged})"
    order, how = preference(rule, F[ok], maximize, weights, None if catalogue is None else catalogue[ok])
    return ok[order], f"{how.replace(maximize, label(maximize, k))} among {len(ok)} policies with {bounds} ({judged})"


def _pseudo_weights(F: np.ndarray, weights: dict[str, float]) -> int:
    PseudoWeights = _pymoo_mcdm().PseudoWeights

    varies = F.max(axis=0) > F.min(axis=0)  # a constant objective has no pseudo-weight (0 / 0)
    if len(F) == 1 or not varies.any():
        return 0
    w = _weight_vector(weights)[varies]
    loss = normalized_loss(F)[:, varies]  # pymoo minimizes: ideal 0, nadir 1
    return int(PseudoWeights(w / max(w.sum(), 1e-12)).do(loss))


def _knee(F: np.ndarray) -> tuple[int, str]:
    HighTradeoffPoints = _pymoo_mcdm().HighTradeoffPoints

    equal = dict.fromkeys(JUDGED, 1.0)
    varies = F.max(axis=0) > F.min(axis=0)
    if len(F) < 3 or varies.sum() < 2:  # trade-offs need neighbours in at least two objectives
        return int(np.argmin(asf(F, equal))), "closest to the ideal point (too few policies for a knee)"
    found = HighTradeoffPoints().do(normalized_loss(F)[:, varies])
    if found is None or len(np.atleast_1d(found)) == 0:
        return int(np.argmin(asf(F, equal))), "closest to the ideal point (no policy stands out as a knee)"
    found = np.atleast_1d(found)
    best = found[np.argmin(asf(F, equal)[found])]
    return int(best), f"high trade-off point ({len(found)} found; the one closest to the ideal point)"


def _pymoo_mcdm():
    """pymoo's decision-making classes, imported on use (deploy without these rules skips pymoo).
    pymoo 0.6.2 imports scipy.spatial.ckdtree, deprecated by SciPy: not ours to fix, so not shown."""
    import types
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pymoo.mcdm.high_tradeoff import HighTradeoffPoints
        from pymoo.mcdm.pseudo_weights import PseudoWeights
    return types.SimpleNamespace(HighTradeoffPoints=HighTradeoffPoints, PseudoWeights=PseudoWeights)


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str


def gate(candidate: dict[str, Ratio] | None, versus_champion: dict[str, Ratio] | None,
         champion_misses: list[str], min_ratio: dict[str, float], tolerance: dict[str, float], k: int,
         champion_version: str | None = None, identical: bool = False, no_candidate_reason: str = "") -> GateDecision:
    """Promote only if the candidate meets the bounds on test and is non-inferior to the champion.

    candidate: its test objectives over accuracy-only's (Ratio per JUDGED objective); versus_champion:
    over the champion's, on the same test users; champion_misses: the bounds the champion itself
    misses on today's test data (bound_failures of its own ratios).
    - no candidate (no policy met the bounds when choosing): keep the champion;
    - a bound's lower confidence bound falls short on test: keep the champion;
    - identical to the champion (same model, data and policy): nothing new to publish;
    - the champion itself misses a bound on today's test data: promote (it no longer qualifies);
    - for some objective j, the lower confidence bound of candidate_j / champion_j is below
      1 - tolerance_j (non-inferiority at that margin cannot be shown): keep the champion;
    - otherwise promote (the first deployment needs only the bounds).
    The reason names every failing bound or regression with its numbers.
    """
    keep = f"champion {champion_version} kept" if champion_version else "nothing deployed"
    if candidate is None:
        return GateDecision(False, f"{no_candidate_reason}; {keep}")
    failed = bound_failures(candidate, min_ratio, k)
    if failed:
        return GateDecision(False, f"bounds fail on test: {'; '.join(failed)}; {keep}")
    if versus_champion is None:
        return GateDecision(True, "first deployment: bounds hold on test")
    if champion_misses:  # e.g. after retraining or new data: the served policy no longer qualifies
        return GateDecision(True, f"bounds hold on test; champion {champion_version} no longer meets them "
                                  f"({'; '.join(champion_misses)})")
    if identical:
        return GateDecision(False, f"same model, data and policy as champion {champion_version}; nothing to publish")
    regressed = [f"{label(name, k)} vs champion {ratio.describe()}: lower bound {ratio.lower:.3f} < "
                 f"{1 - tolerance.get(name, 0.0):g}"
                 for name, ratio in versus_champion.items() if ratio.lower < 1 - tolerance.get(name, 0.0)]
    if regressed:
        return GateDecision(False, f"regresses vs champion {champion_version}: {'; '.join(regressed)}; {keep}")
    return GateDecision(True, f"bounds hold on test and no objective regresses beyond tolerance vs champion "
                              f"{champion_version}")


def bound_failures(ratios: dict[str, Ratio], min_ratio: dict[str, float], k: int) -> list[str]:
    """Each bound the ratios miss, with their numbers: 'ndcg@10 0.991x [0.970, 1.012] x accuracy-only:
    lower bound 0.974 < 0.98'."""
    return [f"{label(name, k)} {ratios[name].describe()} x accuracy-only: lower bound {ratios[name].lower:.3f} "
            f"< {ratio:g}" for name, ratio in min_ratio.items() if ratios[name].lower < ratio]
