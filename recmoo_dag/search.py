"""Pareto search over re-ranking policies: NSGA-II/III, three baselines at equal budget, hypervolume.

Every objective becomes a loss in one fixed, normalized space anchored on the model's own top-k
(the accuracy-only policy), the region of interest being "what a re-ranker adds to the model":

    ndcg             1 - NDCG@k / NDCG@k(accuracy-only)          0: the model's NDCG, 1: none (< 0: better)
    ild, coverage,
    personalization  (1 - value) / (1 - value(accuracy-only))    0: the best possible (1), 1: the model's
    novelty          (log2(U + 1) - value) / (log2(U + 1) - value(accuracy-only))   same, best = max bits
    cost             (cost - cost(pool k)) / (cost(pool N) - cost(pool k))          0: smallest pool

Hypervolume uses the reference point r = 1.1 in every coordinate: just worse than the nadir of the
region of interest, as Ishibuchi et al. (2018, "How to specify a reference point in hypervolume
calculation for fair performance comparison") recommend, so policies at the anchor still count.
Each method is scored by the non-dominated set of *all* the policies it evaluated with the same
budget (Zitzler et al. 2003: dominance-compliant comparison of the archives).

Users: the search may score policies on a seeded, activity-stratified sample of the validation
users (`search.users`; features.sample_users): its cost then no longer grows with the log. Each
method's non-dominated policies on the sample are ε-thinned there, re-scored on *all* validation
users and on test, and what is non-dominated on all of them is the method's front: the hypervolumes,
front.csv and the decision rule all read full-set figures.

Budget: `search.n_evals` evaluations, or fewer when `search.stall_generations` is set and the
population's hypervolume has gained less than `search.stall_tolerance` (relative) over that many
generations (a stall criterion in the spirit of pymoo's multi-objective termination). The baselines
always get the number of evaluations NSGA actually used.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from moocore import hv_approx, is_nondominated
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.termination import Termination
from pymoo.indicators.hv import HV
from pymoo.optimize import minimize
from pymoo.termination import get_termination
from pymoo.util.ref_dirs import get_reference_directions

from recmoo_dag.objectives import NAMES as OBJECTIVES
from recmoo_dag.policy import (
    CALIBRATION,
    DEBIAS,
    DITHER,
    DIVERSITY,
    NOVELTY,
    POOL,
    TEMPERATURE,
    VARIABLES,
    accuracy_only,
)
from recmoo_dag.yardstick import Yardstick

HV_EXACT_MAX = 600  # larger non-dominated sets get the approximation (see `hypervolume`)
HV_SAMPLES = 2 ** 18


def bounds(k: int, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Box of the decision space: VARIABLES' ranges, the pool in [k, N]."""
    low = np.array([v.low for v in VARIABLES])
    high = np.array([v.high for v in VARIABLES])
    low[POOL], high[POOL] = k, n_candidates
    return low, high


class RoundPool(Repair):
    """The pool is an integer: round it after sampling, crossover and mutation."""

    def _do(self, problem, X, **kwargs):
        X = np.array(X, dtype=np.float64)
        X[:, POOL] = np.round(X[:, POOL])
        return X


class PolicyProblem(Problem):
    """pymoo's view: (n, d) policies -> (n, m) losses of the searched objectives, in one call."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], columns: list[int],
                 low: np.ndarray, high: np.ndarray):
        super().__init__(n_var=len(low), n_obj=len(columns), xl=low, xu=high, elementwise=False)
        self.score, self.columns = score, columns

    def _evaluate(self, X, out, *args, **kwargs):
        out["F"] = self.score(X)[:, self.columns]


def initial_population(pop_size: int, low: np.ndarray, high: np.ndarray, seed: int) -> np.ndarray:
    """The accuracy-only policy, each re-ranking term alone at full weight (flat relevance, largest
    pool), then uniform random policies: a seeded start (Friedrich & Wagner 2015) that puts the
    known ends of the trade-off in the first generation. (pop_size, d)"""
    accuracy = np.zeros(len(VARIABLES))
    accuracy[POOL] = low[POOL]
    extremes = []
    for j in (DEBIAS, NOVELTY, CALIBRATION, DITHER, DIVERSITY):
        x = np.zeros(len(VARIABLES))
        x[j], x[TEMPERATURE], x[POOL] = high[j], high[TEMPERATURE], high[POOL]
        extremes.append(x)
    seeded = np.vstack([accuracy, *extremes])[:pop_size]
    return np.vstack([seeded, random_policies(pop_size - len(seeded), low, high, seed)])


def make_algorithm(name: str, n_obj: int, pop_size: int, seed: int, sampling: np.ndarray | None = None):
    """NSGA-II (Deb et al. 2002) up to 3 objectives, NSGA-III (Deb & Jain 2014) beyond, or as named.
    `sampling`: the first generation's policies (default: pymoo's uniform random sampling)."""
    if name == "auto":
        name = "nsga2" if n_obj <= 3 else "nsga3"
    start = {} if sampling is None else {"sampling": sampling}
    if name == "nsga2":
        return NSGA2(pop_size=pop_size, repair=RoundPool(), eliminate_duplicates=True, **start)
    partitions = 1  # the most Das-Dennis partitions whose directions fit in the population
    while _n_directions(n_obj, partitions + 1) <= pop_size:
        partitions += 1
    ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
    return NSGA3(ref_dirs=ref_dirs, pop_size=max(pop_size, len(ref_dirs)), repair=RoundPool(),
                 eliminate_duplicates=True, **start)


def _n_directions(n_obj: int, partitions: int) -> int:
    from math import comb

    return comb(n_obj + partitions - 1, partitions)


class HypervolumeStall(Termination):
    """The budget, or earlier: when the population's non-dominated hypervolume (in the search's loss
    space, reference point `reference`) gained less than `tolerance` of its value over the last
    `period` generations."""

    def __init__(self, budget: tuple[str, int], reference: float, period: int, tolerance: float):
        super().__init__()
        self.budget, self.reference = get_termination(*budget), reference
        self.period, self.tolerance, self.history = period, tolerance, []

    def _update(self, algorithm) -> float:
        progress = self.budget.update(algorithm)
        if algorithm.opt is None:
            return progress
        self.history.append(hypervolume(algorithm.opt.get("F"), self.reference))
        if len(self.history) > self.period:
            before, now = self.history[-1 - self.period], self.history[-1]
            if now - before <= self.tolerance * max(before, 1e-12):
                return 1.0
        return progress


def run_nsga(evaluate: Callable[[np.ndarray], np.ndarray], losses: Callable[[np.ndarray], np.ndarray],
             columns: list[int], low: np.ndarray, high: np.ndarray, algorithm: str, pop_size: int,
             termination: tuple[str, int] | Termination, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the search on `losses(evaluate(X))`; returns every evaluated policy and its natural
    objectives (the archive): (n, d), (n, 6)."""
    seen_x, seen_natural = [], []

    def recording(X: np.ndarray) -> np.ndarray:
        natural = evaluate(X)
        seen_x.append(np.array(X, dtype=np.float64))
        seen_natural.append(natural)
        return losses(natural)

    problem = PolicyProblem(recording, columns, low, high)
    algorithm = make_algorithm(algorithm, len(columns), pop_size, seed,
                               initial_population(pop_size, low, high, seed))
    stop = termination if isinstance(termination, Termination) else get_termination(*termination)
    minimize(problem, algorithm, stop, seed=seed, verbose=False)
    return np.concatenate(seen_x), np.concatenate(seen_natural)


def mmr_sweep(n: int, low: np.ndarray, high: np.ndarray, pool: int) -> np.ndarray:
    """Baseline (a): classic MMR, one knob. λ on a regular grid of n values in its range, relevance
    at τ = 1 (the model's own probabilities), no novelty, calibration or debiasing, a fixed pool."""
    x = np.zeros((n, len(VARIABLES)))
    x[:, DIVERSITY] = np.linspace(low[DIVERSITY], high[DIVERSITY], n)
    x[:, TEMPERATURE] = 0.0
    x[:, POOL] = np.clip(pool, low[POOL], high[POOL])
    return x


def random_policies(n: int, low: np.ndarray, high: np.ndarray, seed: int) -> np.ndarray:
    """Baseline (b): uniform random search in the same box, integer pools uniform in [k, N]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, (n, len(low)))
    x[:, POOL] = rng.integers(int(low[POOL]), int(high[POOL]) + 1, n)
    return x


def grid_policies(n: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Baseline (c): the weighted-sum re-ranker tuned by grid search, the common practice. A full
    factorial grid over all variables with as many levels as fit in n points, spread evenly
    (earlier variables get the spare level), endpoints included."""
    d = len(low)
    levels = np.full(d, max(2, int(np.floor(n ** (1 / d) + 1e-9))))
    for j in range(d):
        if np.prod(levels) // levels[j] * (levels[j] + 1) <= n:
            levels[j] += 1
    axes = [np.linspace(low[j], high[j], levels[j]) for j in range(d)]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)
    x[:, POOL] = np.round(x[:, POOL])
    return x


def nondominated(losses: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows (minimization), duplicates kept once: (n, m) -> (p,)."""
    return np.flatnonzero(is_nondominated(losses, keep_weakly=False))


def epsilon_thin(losses: np.ndarray, epsilon: float) -> np.ndarray:
    """Indices of an ε-Pareto subset of non-dominated rows (Laumanns et al. 2002, "Combining
    convergence and diversity in evolutionary multiobjective optimization"): the loss space is cut
    into boxes of side ε, only boxes that no other occupied box dominates are kept, and each keeps
    its row closest to the box's best corner (ties: the first row). Every dropped row is within ε
    of a kept one in every objective; the size no longer grows with the budget. (n, m) -> (p,) sorted.
    """
    boxes = np.floor(losses / epsilon)
    corner_distance = np.linalg.norm(losses - boxes * epsilon, axis=1)
    order = np.lexsort((np.arange(len(losses)), corner_distance))  # best row of each box first
    unique_boxes, first = np.unique(boxes[order], axis=0, return_index=True)
    kept = order[first][nondominated(unique_boxes)]
    return np.sort(kept)


def thin_to(losses: np.ndarray, epsilon: float, limit: int) -> np.ndarray:
    """An ε-Pareto subset (epsilon_thin) of at most `limit` rows at the finest ε that allows it, so the
    subset keeps as much of the front's spread as the limit does. The count falls as ε grows (not
    strictly), so ε is bracketed by doubling and then bisected to within 1/1000 of the bracket: mere
    doubling can fall from several times the limit to a fraction of it (a dense 6-D front of 16k
    policies went from over 128 boxes to 21), and the subset's hypervolume with it."""
    epsilon = epsilon if epsilon > 0 else 1.0 / limit
    kept = epsilon_thin(losses, epsilon)
    if len(kept) <= limit:
        return kept
    fine, coarse = epsilon, 2 * epsilon
    kept = epsilon_thin(losses, coarse)
    while len(kept) > limit:
        fine, coarse = coarse, 2 * coarse
        kept = epsilon_thin(losses, coarse)
    for _ in range(10):
        middle = (fine + coarse) / 2
        trial = epsilon_thin(losses, middle)
        if len(trial) <= limit:
            coarse, kept = middle, trial
        else:
            fine = middle
    return kept


def hypervolume(losses: np.ndarray, reference: float) -> float:
    """Hypervolume of the rows inside the reference box: exact (pymoo's HV) up to HV_EXACT_MAX
    non-dominated rows, else moocore's deterministic approximation (Rphi-FWE+, 2^18 directions).

    Exact 6-objective hypervolume costs O(n^(m-2)): ~6 s for 1,000 points, minutes for 3,000,
    and a 6-objective archive of 20k evaluations keeps thousands. On 6-D test sets of 500 and
    1,000 points the approximation is within 0.05% of the exact value, far below the gaps compared.
    """
    inside = losses[(losses < reference).all(axis=1)]
    if len(inside) == 0:
        return 0.0
    inside = inside[nondominated(inside)]
    ref = np.full(losses.shape[1], reference)
    if len(inside) <= HV_EXACT_MAX:
        return float(HV(ref_point=ref)(inside))
    return float(hv_approx(inside, ref=ref, nsamples=HV_SAMPLES, method="Rphi-FWE+"))


def search(valid: Yardstick, test: Yardstick, objectives: list[str], algorithm: str, pop_size: int,
           termination: tuple[str, int], reference: float, mmr_pool: int, seed: int,
           front_epsilon: float = 0.0, sample: np.ndarray | None = None,
           stall: tuple[int, float] | None = None, rescore_policies: int = 128) -> dict:
    """The whole study: NSGA, the three baselines at its budget, fronts and hypervolumes on valid
    and (front policies re-scored) on test. `sample`: the validation users the search scores
    policies on (None: all), each method's sample front then thinned to at most `rescore_policies`
    for the full-set verdict; `stall`: (generations, tolerance) of the early stop. Returns plain
    arrays and numbers."""
    columns = [OBJECTIVES.index(name) for name in objectives]
    low, high = bounds(valid.k, valid.ctx.n_candidates)
    searched = valid if sample is None or len(sample) >= valid.ctx.n_users else valid.subset(sample)
    stop = HypervolumeStall(termination, reference, *stall) if stall else termination
    start = time.perf_counter()
    nsga_x, nsga_natural = run_nsga(searched.objectives, searched.losses, columns, low, high, algorithm, pop_size,
                                    stop, seed)
    seconds = time.perf_counter() - start
    budget = len(nsga_x)
    candidates = {
        "nsga": (nsga_x, nsga_natural),
        "mmr_sweep": mmr_sweep(budget, low, high, mmr_pool),
        "random": random_policies(budget, low, high, seed),
        "grid": grid_policies(budget, low, high),
    }
    out = {"n_evals": budget, "seconds": seconds, "hypervolume": {}, "hypervolume_test": {},
           "hypervolume_searched": {}, "fronts": {}, "front_size_before_thinning": {},
           "users_searched": searched.ctx.n_users}
    for method, found in candidates.items():
        x, natural = found if isinstance(found, tuple) else (found, searched.objectives(found))
        losses_all = searched.losses(natural)
        front = nondominated(losses_all[:, columns])
        x_front, natural_valid, losses_valid = x[front], natural[front], losses_all[front][:, columns]
        out["front_size_before_thinning"][method] = len(front)
        shown = epsilon_thin(losses_valid, front_epsilon) if front_epsilon > 0 else np.arange(len(front))
        if searched is not valid:  # the thinned sample front, measured on everyone: its non-dominated part
            x_front = x_front[thin_to(losses_valid, front_epsilon, rescore_policies)]
            natural_valid = valid.objectives(x_front)
            losses_valid = valid.losses(natural_valid)[:, columns]
            kept = nondominated(losses_valid)
            x_front, natural_valid, losses_valid = x_front[kept], natural_valid[kept], losses_valid[kept]
            shown = np.arange(len(kept))
        natural_test = test.objectives(x_front)
        out["hypervolume"][method] = hypervolume(losses_valid, reference)
        # What the search itself saw, every policy it evaluated, before any thinning or verdict.
        out["hypervolume_searched"][method] = out["hypervolume"][method] if searched is valid else \
            hypervolume(losses_all[front][:, columns], reference)
        out["hypervolume_test"][method] = hypervolume(test.losses(natural_test)[:, columns], reference)
        # Hypervolumes above use every non-dominated policy; what is reported and chosen from is
        # an ε-Pareto subset, whose size does not grow with the budget (6-D fronts hold thousands).
        out["fronts"][method] = {"x": x_front[shown], "valid": natural_valid[shown], "test": natural_test[shown]}
    out["accuracy_only"] = {"valid": valid.accuracy_only, "test": test.accuracy_only}
    out["paired_se"] = {"searched": paired_se(searched, out["fronts"]["nsga"]["x"]),
                        "all": paired_se(valid, out["fronts"]["nsga"]["x"])}
    return out


def paired_se(yard: Yardstick, policies: np.ndarray) -> float:
    """The standard error of a policy's NDCG difference with the accuracy-only lists, paired user by
    user, as a share of accuracy-only NDCG: the noise of these users' verdicts (mean over up to 64
    of `policies`)."""
    if len(policies) == 0 or yard.ctx.n_users < 2:
        return float("nan")
    policies = policies[np.linspace(0, len(policies) - 1, min(len(policies), 64)).round().astype(int)]
    difference = yard.user_ndcg(policies) - yard.user_ndcg(accuracy_only(yard.k))[0]  # (P, U)
    error = difference.std(axis=1, ddof=1).mean() / np.sqrt(difference.shape[1])
    return float(error / max(yard.accuracy_only[0], 1e-12))


def summary(result: dict, front_size: int) -> dict:
    """metrics/search.json: budget, speed, front sizes, hypervolumes and the accuracy-only policy's
    objectives (short names) on valid and test."""
    return {
        "n_evals": int(result["n_evals"]),
        "seconds": round(result["seconds"], 3),
        "evals_per_second": round(result["n_evals"] / result["seconds"], 1),
        "front_size": front_size,
        "front_size_before_thinning": int(result["front_size_before_thinning"]["nsga"]),
        "hypervolume": {m: round(v, 6) for m, v in result["hypervolume"].items()},
        "hypervolume_test": {m: round(v, 6) for m, v in result["hypervolume_test"].items()},
        "hypervolume_searched": {m: round(v, 6) for m, v in result["hypervolume_searched"].items()},
        "accuracy_only": {context: {name: round(float(v), 6) for name, v in zip(OBJECTIVES, values)}
                          for context, values in result["accuracy_only"].items()},
        "users": {"searched": int(result["users_searched"]),
                  "paired_se_searched": round(result["paired_se"]["searched"], 6),
                  "paired_se_all": round(result["paired_se"]["all"], 6)},
    }
