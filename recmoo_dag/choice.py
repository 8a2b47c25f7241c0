"""Choosing a policy of a front: the decision rule (decision.py) run on valid users split into
selection and confirmation users, with the figures and intervals every verdict uses. The deploy
stage chooses with it, and the search stage asks it whether a retry's front is needed
(`deploy.splits`); it imports nothing of deployment (store, bundles, lineage)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from recmoo_dag.config import DeployParams, EvaluationParams
from recmoo_dag.decision import bound_failures, choose, nearest_to_bounds
from recmoo_dag.objectives import CATALOGUE, JUDGED, REPORTED, label
from recmoo_dag.policy import POOL, accuracy_only_policy
from recmoo_dag.uncertainty import Bootstrap, Ratio, percentiles, ratio
from recmoo_dag.yardstick import Yardstick


def clamp_pools(policies: np.ndarray, k: int, n_candidates: int) -> np.ndarray:
    """Pools within [k, N]: a front found with more candidates than these still applies. (B, d)"""
    out = np.atleast_2d(np.asarray(policies, dtype=np.float64)).copy()
    out[:, POOL] = np.clip(np.round(out[:, POOL]), k, n_candidates)
    return out


@dataclass(frozen=True)
class Figures:
    """One policy's judged objectives on a window's users: the values and their intervals."""

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    replicates: dict[str, np.ndarray] = field(compare=False, repr=False)  # (R,) each, on `Bootstrap` draws

    def ratios(self, baseline: Figures, level: float, confidence: float) -> dict[str, Ratio]:
        """Each objective over `baseline`'s, on the same users and draws."""
        return {name: Ratio.of(self.values[name], baseline.values[name], self.replicates[name],
                               baseline.replicates[name], level, confidence) for name in JUDGED}


def figures(yard: Yardstick, policy: np.ndarray, boot: Bootstrap, level: float) -> Figures:
    """A policy's judged objectives and catalogue figures on `yard` and their intervals (a bootstrap
    over its users)."""
    point = yard.replicates(np.atleast_2d(policy), np.ones((1, boot.n_users)), REPORTED)
    draws = yard.replicates(np.atleast_2d(policy), boot.weights, REPORTED)
    return Figures({name: float(point[name][0, 0]) for name in REPORTED},
                   {name: tuple(float(v) for v in percentiles(draws[name][0], level)) for name in REPORTED},
                   {name: draws[name][0] for name in REPORTED})


def lower_bounds(yard: Yardstick, policies: np.ndarray, names: list[str], boot: Bootstrap,
                 confidence: float) -> dict[str, np.ndarray]:
    """The one-sided lower confidence bound of each policy's ratio to accuracy-only on every named
    objective, paired over `yard`'s users: (P, d) -> {name: (P,)}."""
    both = np.vstack([policies, accuracy_only_policy(yard.k)])
    draws = yard.replicates(both, boot.weights, tuple(names))
    return {name: np.quantile(ratio(draws[name][:-1], draws[name][-1]), 1.0 - confidence, axis=1) for name in names}


@dataclass(frozen=True)
class Choice:
    policy: np.ndarray | None  # (d,) pools clamped to the candidates there are; None: no policy qualified
    reason: str  # the rule's account of its pick, or which bounds no policy met
    shortfalls: list[dict]  # when none qualified: per bound, what the policy nearest to them all reached
    confirmed: dict[str, Ratio] | None  # the chosen policy over accuracy-only on the confirmation users


def choose_policy(fronts: Iterable[np.ndarray], yard: Yardstick, cfg: DeployParams, k: int,
                  evaluation: EvaluationParams, seed: int) -> Choice:
    """The rule's pick among a front's policies (P, d), on `yard` (the select_on window).

    Choosing the best of many policies on the same users that judge it inflates its figures (the
    winner's curse), so the window's users are split at random (`Yardstick.split_for_confirmation`,
    the split the search stage found the front on): the rule ranks the policies that meet the
    bounds on `1 - deploy.confirm_share` of them, and its first choices, up to `deploy.shortlist`,
    are tested in that order on the others; the first to meet every bound there is chosen, and its
    figures on those users are free of the search's and the choice's optimism.

    Which users land in which half moves the verdict more than the search's seed does (README,
    "Ids are names"), so when no pick confirms, the next of `fronts` (one per split, up to
    `deploy.splits`, each found on its own split's selection users; read only when reached) gets
    the same rule on its own split, and the first pick that confirms is chosen. Each confirmation
    is a fresh test on users its front and rule never saw; trying several makes a lucky
    confirmation likelier, which the gate's one test on test, untouched by every split, is there
    to catch."""
    tried = []
    for split, front in enumerate(fronts):
        selection, confirmation = yard.split_for_confirmation(cfg.confirm_share, seed, split)
        choice = choose_between(clamp_pools(front, k, yard.requests.n_candidates), selection, confirmation, cfg, k,
                                evaluation, seed)
        if cfg.searched_splits > 1:
            choice = replace(choice, reason=f"split {split + 1} of up to {cfg.searched_splits}: {choice.reason}")
        if choice.policy is not None:
            return choice
        tried.append(choice)
    return replace(tried[0], reason="; ".join(choice.reason for choice in tried))


def choose_between(policies: np.ndarray, selection: Yardstick, confirmation: Yardstick, cfg: DeployParams, k: int,
                   evaluation: EvaluationParams, seed: int) -> Choice:
    """`choose_policy` on a given split: the rule ranks `policies` (P, d) on `selection`'s users and
    tests its first choices on `confirmation`'s (the same yardstick: no held-out users)."""
    n_confirming = len(confirmation.user_index[0]) if confirmation is not selection else 0
    boot_select = Bootstrap(len(selection.user_index[0]), evaluation.replicates, seed)
    boot_confirm = Bootstrap(len(confirmation.user_index[0]), evaluation.replicates, seed + 1)
    lower = lower_bounds(selection, policies, list(cfg.min_ratio), boot_select, cfg.confidence)
    F = selection.objectives(policies)[:, :len(JUDGED)]
    catalogue = (selection.catalogue(policies)[:, CATALOGUE.index(cfg.maximize)] if cfg.maximize in CATALOGUE
                 else None)
    order, why = choose(cfg.rule, F, lower, cfg.min_ratio, cfg.maximize, cfg.weights, k, cfg.confidence, catalogue)
    if len(order) == 0:
        nearest = nearest_to_bounds(lower, cfg.min_ratio)
        reached = {name: Ratio(float(ratio(F[nearest, JUDGED.index(name)], selection.accuracy_only[JUDGED.index(name)])),
                               float("nan"), float("nan"), float(lower[name][nearest])) for name in cfg.min_ratio}
        return Choice(None, why, shortfalls(reached, cfg.min_ratio, k, "valid"), None)
    baseline = figures(confirmation, accuracy_only_policy(k), boot_confirm, evaluation.level)
    tried = []
    for index in order[:cfg.shortlist]:
        ratios = figures(confirmation, policies[index], boot_confirm, evaluation.level).ratios(
            baseline, evaluation.level, cfg.confidence)
        if not bound_failures(ratios, cfg.min_ratio, k):
            where = f"confirmed on {n_confirming} held-out valid users" if n_confirming else "no held-out users"
            return Choice(policies[index], f"{why}; {where} (choice {len(tried) + 1} of the rule's order)", [], ratios)
        tried.append(ratios)
    why = f"{why}; none of the rule's first {len(tried)} met the bounds on {n_confirming} held-out valid users"
    return Choice(None, why, shortfalls(tried[0], cfg.min_ratio, k, "valid (held-out users)"), None)


def shortfalls(ratios: dict[str, Ratio], min_ratio: dict[str, float], k: int, where: str) -> list[dict]:
    """Each bound as measured: the ratio to accuracy-only reached, its lower confidence bound, the
    ratio required, and by how much the lower bound misses it (0 when met)."""
    return [{"objective": label(name, k), "where": where, "ratio": round(ratios[name].value, 6),
             "lower_bound": round(ratios[name].lower, 6), "required": required,
             "failed": bool(ratios[name].lower < required),
             "missed_by": round(float(max(required - ratios[name].lower, 0.0)), 6)}
            for name, required in min_ratio.items()]
