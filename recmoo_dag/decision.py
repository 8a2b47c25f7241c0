"""Decision rules that pick a policy from the Pareto front, and the gate against the served champion.

Every objective here is "higher is better" and measured on top-k lists (`objectives.JUDGED`, in
that column order). A rule picks one policy among the front's policies that meet the bounds
`deploy.min_ratio` (ratios to the accuracy-only policy, i.e. the model's own top-k):

- constrained: the feasible policy with the highest `deploy.maximize` (default: maximize catalog
  coverage subject to NDCG >= 0.98 x accuracy-only). Ties go to the higher NDCG.
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

The gate (`gate`) then judges the chosen policy on the test window against the champion (the
served version, re-evaluated on the same test data): see its docstring. Pure: arrays in, decisions
out; recmoo_dag/deploy.py measures the policies and publishes. `k` only names the objectives in
messages ("ndcg@10").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recmoo_dag.objectives import JUDGED, label

RHO = 1e-4  # augmentation of the ASF: breaks ties in favour of non-weakly-dominated policies


def _column(name: str) -> int:
    return JUDGED.index(name)


def judged(F: np.ndarray, min_ratio: dict[str, float], ndcg_lower: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each bounded objective's values as the bounds judge them: F's column, or for NDCG the lower
    confidence bound ndcg_lower (P,) when given. F (P, m) -> {name: (P,)} in min_ratio's order."""
    return {name: ndcg_lower if name == "ndcg" and ndcg_lower is not None else F[:, _column(name)]
            for name in min_ratio}


def feasible(F: np.ndarray, accuracy_only: np.ndarray, min_ratio: dict[str, float],
             ndcg_lower: np.ndarray | None = None) -> np.ndarray:
    """Which policies meet every bound f_j >= ratio_j x accuracy-only_j: F (P, m) -> (P,) bool.
    ndcg_lower (P,): judge NDCG by this lower confidence bound instead of F's value."""
    ok = np.ones(len(F), dtype=bool)
    for name, values in judged(F, min_ratio, ndcg_lower).items():
        ok &= values >= min_ratio[name] * accuracy_only[_column(name)]
    return ok


def nearest_to_bounds(F: np.ndarray, accuracy_only: np.ndarray, min_ratio: dict[str, float],
                      ndcg_lower: np.ndarray | None = None) -> int:
    """The row whose largest miss of a bound (required ratio - reached ratio to accuracy-only, 0 when
    met) is smallest, ties to the first: when no policy meets every bound, the one nearest to meeting
    them all at once. Several bounds each met by a different policy are no joint success, and the
    policy nearest to one says by how much the others are missed. F (P, m) -> a row index."""
    misses = np.zeros(len(F))
    for name, values in judged(F, min_ratio, ndcg_lower).items():
        scale = accuracy_only[_column(name)]
        if scale > 0:
            misses = np.maximum(misses, min_ratio[name] - values / scale)
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


def ndcg_lower_bound(user_gains: np.ndarray, accuracy_only_gains: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided lower confidence bound of each policy's NDCG, from the paired per-user differences
    with the accuracy-only lists on the same users: mean NDCG - z_confidence x SE(mean difference).

    Why: ~1k users' NDCG@10 is noisy (a standard error of several percent of its value), so the
    policy with the most coverage whose *point* estimate just clears "NDCG >= 0.98 x accuracy-only"
    on valid lands below the bound on test about half the time, and the gate refuses it. Pairing
    removes the users' shared difficulty; the remaining noise is what the margin covers.
    user_gains (P, U), accuracy_only_gains (U,) -> (P,). confidence 0.5 gives the point estimate.
    """
    from statistics import NormalDist

    differences = user_gains - accuracy_only_gains  # (P, U)
    n_users = differences.shape[-1]
    error = differences.std(axis=-1, ddof=1) / np.sqrt(n_users) if n_users > 1 else np.zeros(len(differences))
    return np.maximum(user_gains.mean(axis=-1) - NormalDist().inv_cdf(confidence) * error, 0.0)  # NDCG >= 0


def choose(rule: str, F: np.ndarray, accuracy_only: np.ndarray, min_ratio: dict[str, float],
           maximize: str, weights: dict[str, float], k: int,
           ndcg_lower: np.ndarray | None = None) -> tuple[int | None, str]:
    """Index of the chosen policy among F's rows (or None when no policy meets the bounds), and why.
    ndcg_lower (P,): the bounds judge NDCG by this lower confidence bound instead of F's value."""
    ok = np.flatnonzero(feasible(F, accuracy_only, min_ratio, ndcg_lower))
    judged = " (lower confidence bound)" if ndcg_lower is not None else ""
    bounds = ", ".join(f"{label(name, k)}{judged if name == 'ndcg' else ''} >= {v:g} x accuracy-only"
                       for name, v in min_ratio.items()) or "no bounds"
    if len(ok) == 0:
        return None, f"no policy of the front meets the bounds ({bounds})"
    sub = F[ok]
    if rule == "constrained":
        j, ndcg = _column(maximize), _column("ndcg")
        pick = int(np.lexsort((-sub[:, ndcg], -sub[:, j]))[0])  # max objective, then max NDCG
        why = f"max {label(maximize, k)} among {len(ok)} policies with {bounds}"
    elif rule == "asf":
        pick = int(np.argmin(asf(sub, weights)))
        why = f"min achievement scalarization, weights {weights}, among {len(ok)} policies with {bounds}"
    elif rule == "pseudo_weights":
        pick = _pseudo_weights(sub, weights)
        why = f"pseudo-weights closest to {weights} among {len(ok)} policies with {bounds}"
    elif rule == "knee":
        pick, how = _knee(sub)
        why = f"{how} among {len(ok)} policies with {bounds}"
    else:
        raise ValueError(f"deploy.rule {rule!r} is not one of constrained, asf, pseudo_weights, knee")
    return int(ok[pick]), why


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


def gate(candidate: dict[str, float] | None, accuracy_only: dict[str, float], champion: dict[str, float] | None,
         min_ratio: dict[str, float], tolerance: dict[str, float], k: int, champion_version: str | None = None,
         identical: bool = False, no_candidate_reason: str = "") -> GateDecision:
    """Promote only if the candidate meets the bounds on test and does not regress beyond tolerance.

    candidate, accuracy_only and champion: test objectives by name, all on the same test data.
    - no candidate (no policy met the bounds when choosing): keep the champion;
    - a bound fails on test: keep the champion;
    - identical to the champion (same model, data and policy): nothing new to publish;
    - the champion itself fails a bound on today's test data: promote (it no longer qualifies);
    - some objective j below champion_j x (1 - tolerance_j): keep the champion;
    - otherwise promote (the first deployment needs only the bounds).
    The reason names every failing bound or regression with its numbers.
    """
    keep = f"champion {champion_version} kept" if champion_version else "nothing deployed"
    if candidate is None:
        return GateDecision(False, f"{no_candidate_reason}; {keep}")
    failed = bound_failures(candidate, accuracy_only, min_ratio, k)
    if failed:
        return GateDecision(False, f"bounds fail on test: {'; '.join(failed)}; {keep}")
    if champion is None:
        return GateDecision(True, "first deployment: bounds hold on test")
    champion_failed = bound_failures(champion, accuracy_only, min_ratio, k)
    if champion_failed:  # e.g. after retraining or new data: the served policy no longer qualifies
        return GateDecision(True, f"bounds hold on test; champion {champion_version} no longer meets them "
                                  f"({'; '.join(champion_failed)})")
    if identical:
        return GateDecision(False, f"same model, data and policy as champion {champion_version}; nothing to publish")
    regressed = [f"{label(name, k)} {candidate[name]:.4f} < champion {champion[name]:.4f} - "
                 f"{tolerance.get(name, 0.0):.0%}"
                 for name in JUDGED if candidate[name] < champion[name] * (1 - tolerance.get(name, 0.0))]
    if regressed:
        return GateDecision(False, f"regresses vs champion {champion_version}: {'; '.join(regressed)}; {keep}")
    return GateDecision(True, f"bounds hold on test and no objective regresses beyond tolerance vs champion "
                              f"{champion_version}")


def bound_failures(values: dict[str, float], accuracy_only: dict[str, float], min_ratio: dict[str, float],
                   k: int) -> list[str]:
    """Each bound `values` misses, with its numbers: 'ndcg@10 0.0610 < 0.98 x accuracy-only 0.0650'."""
    return [f"{label(name, k)} {values[name]:.4f} < {ratio:g} x accuracy-only {accuracy_only[name]:.4f}"
            for name, ratio in min_ratio.items() if values[name] < ratio * accuracy_only[name]]
