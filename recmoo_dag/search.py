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

Baskets: the search may score policies on a seeded sample of the validation baskets, spread over
users stratified by activity (`search.baskets`; yardstick.sample_cases): its cost then no longer
grows with the log. Each method's non-dominated policies on the sample are ε-thinned there,
re-scored on *all* validation baskets and on test, and what is non-dominated on all of them is the
method's front: the hypervolumes, front.csv and the decision rule all read full-set figures.
front.csv holds at most `search.rescore_policies` policies either way (the finest ε that fits),
each with its NDCG@k ratio to the accuracy-only policy and that ratio's interval, valid and test.

Budget: `search.n_evals` evaluations, or fewer when `search.stall_generations` is set and the
population's hypervolume has gained less than `search.stall_tolerance` (relative) over that many
generations (a stall criterion in the spirit of pymoo's multi-objective termination). The baselines
always get the number of evaluations NSGA actually used.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.termination import Termination
from pymoo.operators.selection.tournament import TournamentSelection, compare
from pymoo.optimize import minimize
from pymoo.termination import get_termination
from pymoo.util.ref_dirs import get_reference_directions

from recmoo_dag.config import EvaluationParams
from recmoo_dag.objectives import OBJECTIVES
from recmoo_dag.pareto import hypervolume, nondominated, thin_to
from recmoo_dag.policy import (
    CALIBRATION,
    DEBIAS,
    DITHER,
    DIVERSITY,
    EXPOSURE_CAP,
    EXPOSURE_FLOOR,
    KEEP_HEAD,
    NOVELTY,
    POOL,
    TEMPERATURE,
    VARIABLE_NAMES,
    VARIABLES,
    accuracy_only_policy,
)
from recmoo_dag.results import SearchMetrics
from recmoo_dag.uncertainty import Bootstrap, ratio
from recmoo_dag.yardstick import Yardstick

SWITCHABLE = tuple(name for name in VARIABLE_NAMES if name != "pool")  # 0 turns each one's term off


def bounds(k: int, n_candidates: int, switched_off: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Box of the decision space: VARIABLES' ranges, keep_head in [0, k // 2], the pool in [k, N];
    the `switched_off` variables held at 0, which turns each one's term off (ablations).

    keep_head stops at half the list: under `search.ndcg_floor` nearly every policy keeping more is
    feasible, and NSGA's population drifted there, to lists with two or three slots re-ranked (ML-100K,
    3 seeds: hypervolume of the floored front 0.018 / 0.030 / 0.016 with keep_head up to k, 0.024 /
    0.029 / 0.032 without it, 0.033 / 0.030 / 0.032 up to k // 2)."""
    low = np.array([v.low for v in VARIABLES])
    high = np.array([v.high for v in VARIABLES])
    high[KEEP_HEAD] = k // 2
    low[POOL], high[POOL] = k, n_candidates
    unknown = sorted(set(switched_off) - set(SWITCHABLE))
    if unknown:
        raise ValueError(f"bounds: {unknown} cannot be switched off (only {SWITCHABLE}; the pool has no off)")
    off = np.isin(VARIABLE_NAMES, switched_off)
    low[off] = high[off] = 0.0
    return low, high


INTEGERS = [j for j, v in enumerate(VARIABLES) if v.integer]


class RoundIntegers(Repair):
    """keep_head and the pool are integers: round them after sampling, crossover and mutation."""

    def _do(self, problem, X, **kwargs):
        X = np.array(X, dtype=np.float64)
        X[:, INTEGERS] = np.round(X[:, INTEGERS])
        return X


class PolicyProblem(Problem):
    """pymoo's view: (n, d) policies -> (n, m) losses of the searched objectives, in one call; with an
    NDCG floor, one inequality constraint (pymoo's G <= 0): NDCG loss <= 1 - floor."""

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], columns: list[int],
                 low: np.ndarray, high: np.ndarray, ndcg_floor: float | None = None):
        super().__init__(n_var=len(low), n_obj=len(columns), n_ieq_constr=int(ndcg_floor is not None), xl=low,
                         xu=high, elementwise=False)
        self.score, self.columns, self.ndcg_floor = score, columns, ndcg_floor

    def _evaluate(self, X, out, *args, **kwargs):
        losses = self.score(X)  # (n, 6) every objective's loss; column 0 is 1 - NDCG ratio
        out["F"] = losses[:, self.columns]
        if self.ndcg_floor is not None:
            out["G"] = losses[:, :1] - (1.0 - self.ndcg_floor)


def initial_population(pop_size: int, low: np.ndarray, high: np.ndarray, seed: int) -> np.ndarray:
    """The accuracy-only policy, each re-ranking term alone at full weight (flat relevance, largest
    pool), each exposure price alone at full weight (the model's own relevance, largest pool: its
    LP's allocation), then uniform random policies: a seeded start (Friedrich & Wagner 2015) that
    puts the known ends of the trade-off in the first generation. (pop_size, d)"""
    accuracy = np.zeros(len(VARIABLES))
    accuracy[POOL] = low[POOL]
    extremes = []
    for j in (DEBIAS, NOVELTY, CALIBRATION, DITHER, DIVERSITY, EXPOSURE_CAP, EXPOSURE_FLOOR):
        x = np.zeros(len(VARIABLES))
        flat = j not in (EXPOSURE_CAP, EXPOSURE_FLOOR)
        x[j], x[TEMPERATURE], x[POOL] = high[j], high[TEMPERATURE] if flat else 0.0, high[POOL]
        extremes.append(x)
    seeded = np.vstack([accuracy, *extremes])[:pop_size]
    return np.vstack([seeded, random_policies(pop_size - len(seeded), low, high, seed)])


def violation_then_random(pop, P: np.ndarray, random_state: np.random.Generator, **kwargs) -> np.ndarray:
    """NSGA-III's binary tournament (pymoo's `comp_by_cv_then_random`): the smaller constraint
    violation wins, ties and feasible pairs at random, every draw from the run's seeded generator.
    pymoo 0.6.2 breaks ties of violation with an unseeded generator (pymoo#794, fixed upstream by
    #795 after the release), so two runs of one seed could differ once infeasible policies (under
    `search.ndcg_floor`) measured the same NDCG: the search stage's outputs were not reproducible.
    P: (n, 2) competitors -> (n, 1) winners."""
    winners = np.empty(len(P), dtype=int)
    for i, (a, b) in enumerate(P):
        if pop[a].CV > 0.0 or pop[b].CV > 0.0:
            winners[i] = compare(a, pop[a].CV, b, pop[b].CV, method="smaller_is_better", return_random_if_equal=True,
                                 random_state=random_state)
        else:
            winners[i] = random_state.choice([a, b])
    return winners[:, None]


def make_algorithm(name: str, n_obj: int, pop_size: int, seed: int, sampling: np.ndarray | None = None):
    """NSGA-II (Deb et al. 2002) up to 3 objectives, NSGA-III (Deb & Jain 2014) beyond, or as named.
    `sampling`: the first generation's policies (default: pymoo's uniform random sampling)."""
    if name == "auto":
        name = "nsga2" if n_obj <= 3 else "nsga3"
    start = {} if sampling is None else {"sampling": sampling}
    if name == "nsga2":
        return NSGA2(pop_size=pop_size, repair=RoundIntegers(), eliminate_duplicates=True, **start)
    partitions = 1  # the most Das-Dennis partitions whose directions fit in the population
    while _n_directions(n_obj, partitions + 1) <= pop_size:
        partitions += 1
    ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
    return NSGA3(ref_dirs=ref_dirs, pop_size=max(pop_size, len(ref_dirs)), repair=RoundIntegers(),
                 eliminate_duplicates=True, selection=TournamentSelection(func_comp=violation_then_random), **start)


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
             termination: tuple[str, int] | Termination, seed: int,
             ndcg_floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the search on `losses(evaluate(X))`, policies below `ndcg_floor` x accuracy-only NDCG
    infeasible (constraint domination, Deb et al. 2002); returns every evaluated policy and its
    natural objectives (the archive): (n, d), (n, 6)."""
    seen_x, seen_natural = [], []

    def recording(X: np.ndarray) -> np.ndarray:
        natural = evaluate(X)
        seen_x.append(np.array(X, dtype=np.float64))
        seen_natural.append(natural)
        return losses(natural)

    problem = PolicyProblem(recording, columns, low, high, ndcg_floor)
    algorithm = make_algorithm(algorithm, len(columns), pop_size, seed,
                               initial_population(pop_size, low, high, seed))
    stop = termination if isinstance(termination, Termination) else get_termination(*termination)
    minimize(problem, algorithm, stop, seed=seed, verbose=False)
    return np.concatenate(seen_x), np.concatenate(seen_natural)


def mmr_sweep(n: int, low: np.ndarray, high: np.ndarray, pool: int) -> np.ndarray:
    """Baseline (a): MMR's one knob. λ of the list-diversity penalty (policy.py: the mean similarity
    to the list) on a regular grid of n values in its range, relevance at τ = 1 (the model's own
    probabilities), no novelty, calibration or debiasing, a fixed pool."""
    x = np.zeros((n, len(VARIABLES)))
    x[:, DIVERSITY] = np.linspace(low[DIVERSITY], high[DIVERSITY], n)
    x[:, TEMPERATURE] = 0.0
    x[:, POOL] = np.clip(pool, low[POOL], high[POOL])
    return x


def random_policies(n: int, low: np.ndarray, high: np.ndarray, seed: int) -> np.ndarray:
    """Baseline (b): uniform random search in the same box, integers uniform over their range."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(low, high, (n, len(low)))
    for j in INTEGERS:
        x[:, j] = rng.integers(int(low[j]), int(high[j]) + 1, n)
    return x


def grid_policies(n: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Baseline (c): the weighted-sum re-ranker tuned by grid search, the common practice. A full
    factorial grid over all variables with as many levels as fit in n points, spread evenly
    (earlier variables get the spare level), endpoints included; below 2^d points the last
    variables keep one level, their low end (as does a variable held at one value)."""
    d = len(low)
    levels = np.ones(d, dtype=np.int64)  # one level: the variable stays at its low end (its term off)
    grown = True
    while grown:
        grown = False
        for j in range(d):
            if high[j] > low[j] and np.prod(levels) // levels[j] * (levels[j] + 1) <= n:
                levels[j] += 1
                grown = True
    axes = [np.linspace(low[j], high[j], levels[j]) for j in range(d)]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)
    x[:, INTEGERS] = np.round(x[:, INTEGERS])
    return x


@dataclass(frozen=True)
class MethodFront:
    """One method's front as reported: its policies and their natural objectives on both windows."""

    x: np.ndarray  # (P, d) decision variables
    valid: np.ndarray  # (P, 6) natural objectives (OBJECTIVES order) on every validation basket
    test: np.ndarray  # (P, 6) on test
    # window -> (P, 3): NDCG@k over the accuracy-only policy's, paired over users, and its interval
    ndcg_ratio: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """The whole study: every method's front and hypervolumes, on valid and on test."""

    n_evals: int  # evaluations each method got (what NSGA used)
    seconds: float  # NSGA's wall time
    users_searched: int  # the validation users whose baskets policies were scored on
    baskets_searched: int  # those baskets (a sample, or all)
    fronts: dict[str, MethodFront]  # method -> its ε-thinned front (results.METHODS)
    front_size_before_thinning: dict[str, int]
    hypervolume: dict[str, float]  # on every validation basket, every non-dominated policy
    hypervolume_test: dict[str, float]
    hypervolume_searched: dict[str, float]  # as the search saw it: the sample, before thinning
    accuracy_only: dict[str, np.ndarray]  # window -> (6,) natural objectives of the accuracy-only policy
    paired_se_searched: float  # `paired_se` of NSGA's front on the baskets searched
    paired_se_all: float  # and on every validation basket

    def metrics(self, front_size: int) -> SearchMetrics:
        """metrics/search.json; `front_size`: the policies front.csv holds."""
        return SearchMetrics(
            self.n_evals, self.seconds, front_size, self.front_size_before_thinning["nsga"], self.hypervolume,
            self.hypervolume_test, self.hypervolume_searched,
            {window: dict(zip(OBJECTIVES, map(float, values))) for window, values in self.accuracy_only.items()},
            self.users_searched, self.baskets_searched, self.paired_se_searched, self.paired_se_all)


def search(valid: Yardstick, test: Yardstick, objectives: list[str], algorithm: str, pop_size: int,
           termination: tuple[str, int], reference: float, mmr_pool: int, seed: int, evaluation: EvaluationParams,
           front_epsilon: float = 0.0, cases: np.ndarray | None = None, stall: tuple[int, float] | None = None,
           rescore_policies: int = 128, ndcg_floor: float | None = None,
           switched_off: tuple[str, ...] = (), baselines: bool = True) -> SearchResult:
    """The whole study: NSGA, the three baselines at its budget, fronts and hypervolumes on valid
    and (front policies re-scored) on test. `cases`: the validation baskets the search scores
    policies on (search.baskets of them, yardstick.sample_cases; None: all), each method's sample front
    then thinned to at most `rescore_policies` for the full-set verdict; `stall`: (generations,
    tolerance) of the early stop; `ndcg_floor`: every method's fronts hold only policies at or above
    this share of accuracy-only NDCG on the searched baskets (NSGA searches under it as a constraint,
    the baselines are filtered by it, and every method knows the accuracy-only policy); `switched_off`:
    variables every method holds at 0 (bounds); `baselines` False: NSGA's front alone (the deploy
    rule's retries need no comparison)."""
    columns = [OBJECTIVES.index(name) for name in objectives]
    low, high = bounds(valid.k, valid.requests.n_candidates, switched_off)
    searched = valid if cases is None or len(cases) >= valid.requests.n_requests else valid.subset(cases)
    stop = HypervolumeStall(termination, reference, *stall) if stall else termination
    start = time.perf_counter()
    nsga_x, nsga_natural = run_nsga(searched.objectives, searched.losses, columns, low, high, algorithm, pop_size,
                                    stop, seed, ndcg_floor)
    seconds = time.perf_counter() - start
    budget = len(nsga_x)
    candidates = {"nsga": (nsga_x, nsga_natural)}
    if baselines:
        candidates |= {"mmr_sweep": mmr_sweep(budget, low, high, mmr_pool),
                       "random": random_policies(budget, low, high, seed),
                       "grid": grid_policies(budget, low, high)}
    fronts, before_thinning, volume, volume_test, volume_searched = {}, {}, {}, {}, {}
    for method, found in candidates.items():
        if ndcg_floor is not None and not isinstance(found, tuple):  # NSGA's first generation holds it already
            found = np.vstack([found, accuracy_only_policy(valid.k)])
        x, natural = found if isinstance(found, tuple) else (found, searched.objectives(found))
        if ndcg_floor is not None:
            within = natural[:, 0] >= ndcg_floor * searched.accuracy_only[0]
            x, natural = x[within], natural[within]
        losses_all = searched.losses(natural)
        front = nondominated(losses_all[:, columns])
        x_front, natural_valid, losses_valid = x[front], natural[front], losses_all[front][:, columns]
        before_thinning[method] = len(front)
        shown = thin_to(losses_valid, front_epsilon, rescore_policies)
        if searched is not valid:  # the thinned sample front, measured on everyone: its non-dominated part
            x_front = x_front[shown]
            natural_valid = valid.objectives(x_front)
            losses_valid = valid.losses(natural_valid)[:, columns]
            kept = nondominated(losses_valid)
            x_front, natural_valid, losses_valid = x_front[kept], natural_valid[kept], losses_valid[kept]
            shown = np.arange(len(kept))
        natural_test = test.objectives(x_front)
        volume[method] = hypervolume(losses_valid, reference)
        # What the search itself saw, every policy it evaluated, before any thinning or verdict.
        volume_searched[method] = volume[method] if searched is valid else \
            hypervolume(losses_all[front][:, columns], reference)
        volume_test[method] = hypervolume(test.losses(natural_test)[:, columns], reference)
        # Hypervolumes above use every non-dominated policy; what is reported and chosen from is
        # an ε-Pareto subset, whose size does not grow with the budget (6-D fronts hold thousands).
        fronts[method] = MethodFront(x_front[shown], natural_valid[shown], natural_test[shown])
    nsga = fronts["nsga"]
    fronts["nsga"] = replace(nsga, ndcg_ratio={window: ndcg_ratios(yard, nsga.x, evaluation, seed)
                                               for window, yard in (("valid", valid), ("test", test))})
    return SearchResult(budget, seconds, len(searched.user_index[0]), searched.requests.n_requests, fronts,
                        before_thinning, volume, volume_test, volume_searched,
                        {"valid": valid.accuracy_only, "test": test.accuracy_only},
                        paired_se(searched, nsga.x), paired_se(valid, nsga.x))


def ndcg_ratios(yard: Yardstick, policies: np.ndarray, evaluation: EvaluationParams, seed: int) -> np.ndarray:
    """Each policy's NDCG@k over the accuracy-only policy's on the same users, and the interval of
    that ratio (a paired bootstrap over the window's users): (P, d) -> (P, 3) ratio, low, high."""
    if len(policies) == 0:
        return np.zeros((0, 3))
    ndcg = yard.user_ndcg(np.vstack([policies, accuracy_only_policy(yard.k)]))  # (P + 1, U)
    boot = Bootstrap(ndcg.shape[1], evaluation.replicates, seed)
    return np.column_stack([ratio(ndcg[:-1].mean(axis=1), ndcg[-1].mean()),
                            boot.ratio_interval(ndcg[:-1], ndcg[-1], evaluation.level)])


def paired_se(yard: Yardstick, policies: np.ndarray) -> float:
    """The standard error of a policy's NDCG difference with the accuracy-only lists, paired user by
    user, as a share of accuracy-only NDCG: the noise of these users' verdicts (mean over up to 64
    of `policies`)."""
    if len(policies) == 0 or len(yard.user_index[0]) < 2:
        return float("nan")
    policies = policies[np.linspace(0, len(policies) - 1, min(len(policies), 64)).round().astype(int)]
    difference = yard.user_ndcg(policies) - yard.user_ndcg(accuracy_only_policy(yard.k))[0]  # (P, U)
    error = difference.std(axis=1, ddof=1).mean() / np.sqrt(difference.shape[1])
    return float(error / max(yard.accuracy_only[0], 1e-12))
