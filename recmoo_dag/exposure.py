"""Exposure prices across users: the dual prices of the bounded top-k assignment.

Every user u (a request: a user or a held-out step) gets k of its N candidates; item i may fill at
most cap_i of the U lists and should fill at least floor_i. The linear program

    max  Σ_u Σ_c s_uc x_uc    s.t.  Σ_c x_uc = k (each u),  floor_i ≤ Σ_u x_ui ≤ cap_i (each i),  0 ≤ x ≤ 1

is the relaxation of the bounded b-matching of Antikacioglu & Ravi (KDD 2017, "Post processing
recommender systems for diversity"), whose lower bounds are their coverage goal. Its Lagrangian
dual in the capacity prices p ≥ 0 and the floor subsidies q ≥ 0,

    D(p, q) = Σ_i cap_i p_i − Σ_i floor_i q_i + Σ_u (sum of the k largest s_uc − p_c + q_c over u's candidates),

is convex and piecewise linear, and min D equals the LP's optimum (strong duality). `solve_prices`
minimizes D by projected subgradient descent, the batch form of P-MMF's online dual update (Xu et
al., WWW 2023): ∂D/∂p_i = cap_i − n_i and ∂D/∂q_i = n_i − floor_i, with n_i the number of lists
holding i when every user takes its top k of s − p + q, so an over-exposed item's price rises and an
under-exposed one's subsidy does. Each iteration is one top-k per user: linear in users ×
candidates, no LP solver in memory. The result is one signed price per item, p − q: a policy
subtracts it (times its weight) from the scores, and each user's top k of s − price is the LP's
allocation, up to ties.

The gap is stated, not assumed: D at the best prices is an upper bound on the LP optimum, and a
feasible assignment repaired from them (each user, in a seeded order, takes its top k of s − price
among items with capacity left; then each item under its floor, in a seeded order, enters the list
where the cheapest swap puts it) is a lower bound; an item no swap can raise stays under its floor
(`below_floor`), and then there is no lower bound. Exact LP prices for small instances:
`lp_prices` (scipy's HiGHS), which the tests compare against.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from recmoo_dag.errors import InputError
from recmoo_dag.windows import WINDOWS

WINDOW_NAMES = tuple(WINDOWS)  # each held-out window weighs prices solved from its own opening lists


@dataclass(frozen=True)
class PriceSolve:
    prices: np.ndarray  # (I + 1,) float64 p − q, in the units of the scores s: > 0 priced, < 0 subsidized
    dual: float  # D(p, q): an upper bound on the LP optimum
    primal: float  # value of the assignment repaired from the prices: a lower bound when feasible
    short_lists: int  # lists the repair could not fill to k within the capacities
    below_floor: int  # items the repaired assignment leaves under their floor
    iterations: int

    @property
    def gap(self) -> float:
        """Relative gap (D − primal) / |primal|: how far from the LP optimum both bounds can be;
        infinite when the repaired assignment is infeasible (no lower bound then)."""
        if self.short_lists or self.below_floor:
            return float("inf")
        return (self.dual - self.primal) / max(abs(self.primal), 1e-12)


def capacities(n_lists: int, k: int, n_items: int, slack: float) -> np.ndarray:
    """Each real item may fill `slack` times its equal share of the U·k slots: (I + 1,), padding 0."""
    cap = np.full(n_items + 1, slack * n_lists * k / n_items)
    cap[0] = 0.0
    return cap


def floors(items: np.ndarray, n_items: int, floor: float) -> np.ndarray:
    """Each real item should fill `floor` lists, or as many as hold it among their candidates (no
    price can list it elsewhere): items (U, N) -> (I + 1,), padding 0."""
    appearances = np.bincount(np.asarray(items).ravel(), minlength=n_items + 1).astype(np.float64)
    appearances[0] = 0.0
    return np.minimum(appearances, floor)


def top_k_counts(scores: np.ndarray, items: np.ndarray, prices: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Every user's top k of scores − prices: how many lists hold each item, and the sum of the
    chosen (score − price). scores, items (U, N); prices (I + 1,) -> (I + 1,) int64, float."""
    adjusted = scores - prices[items]  # (U, N)
    top = np.argpartition(-adjusted, k - 1, axis=1)[:, :k]  # (U, k) positions, any order
    chosen = np.take_along_axis(items, top, axis=1)
    return np.bincount(chosen.ravel(), minlength=len(prices)), float(np.take_along_axis(adjusted, top, 1).sum())


def solve_prices(scores: np.ndarray, items: np.ndarray, k: int, cap: np.ndarray | None = None,
                 floor: np.ndarray | None = None, iterations: int = 200, seed: int = 0) -> PriceSolve:
    """Prices minimizing D by projected subgradient, step η_t = η_0 / √t with η_0 the scores' spread
    over the largest violation; the best prices seen are kept (subgradient steps do not descend
    monotonically). scores (U, N) float, finite on real candidates (padding: item 0, any score);
    items (U, N) int; cap (I + 1,) from `capacities` (None: no capacity), floor (I + 1,) from
    `floors` (None: no floor)."""
    n_prices = len(cap) if cap is not None else len(floor)
    cap = np.full(n_prices, np.inf) if cap is None else np.asarray(cap, dtype=np.float64)
    floor = np.zeros(n_prices) if floor is None else np.asarray(floor, dtype=np.float64)
    scores = np.where(items == 0, -1e9, np.asarray(scores, dtype=np.float64))  # padding: never chosen
    priced, subsidy = np.zeros(n_prices), np.zeros(n_prices)
    real = scores[items != 0]
    spread = float(real.max() - real.min()) if real.size else 1.0
    capped = np.isfinite(cap)
    best_prices, best_dual = np.zeros(n_prices), np.inf
    for t in range(1, iterations + 1):
        counts, value = top_k_counts(scores, items, priced - subsidy, k)
        dual = float(cap[capped] @ priced[capped] - floor @ subsidy) + value
        if dual < best_dual:
            best_dual, best_prices = dual, priced - subsidy
        over = np.where(capped, counts - cap, 0.0)
        under = floor - counts
        over[0] = under[0] = 0.0
        if (over <= 0).all() and (under <= 0).all() and (priced[over < 0] == 0).all() and (subsidy[under < 0] == 0).all():
            break  # complementary slackness holds: these prices are optimal
        # Only a move the projection keeps counts toward the step size.
        moving = max(float(np.abs(over[(over > 0) | (priced > 0)]).max(initial=0.0)),
                     float(np.abs(under[(under > 0) | (subsidy > 0)]).max(initial=0.0)), 1.0)
        step = spread / moving / np.sqrt(t)
        priced = np.maximum(priced + step * over, 0.0)
        subsidy = np.maximum(subsidy + step * under, 0.0)
    order = np.argsort(-(scores - best_prices[items]), axis=1, kind="stable")  # (U, N) best first
    users = np.random.default_rng(seed).permutation(len(items))
    ceiling = np.floor(np.where(capped, cap, len(items)) + 1e-9)  # whole lists each item may fill
    primal, short, listed, chosen = _repair(scores, items, order, users, ceiling.copy(), k)
    need = np.ceil(floor - 1e-9).astype(np.int64)
    if (listed < need).any():
        by_item = np.argsort(items.ravel(), kind="stable")  # every (user, position) of an item, item by item
        starts = np.searchsorted(items.ravel()[by_item], np.arange(n_prices + 1))
        missing = np.flatnonzero(listed < need)
        primal += _lift_to_floors(scores, items, chosen, listed, need, ceiling, by_item, starts,
                                  missing[np.random.default_rng(seed).permutation(len(missing))])
    below = int((listed < need).sum())
    return PriceSolve(best_prices, best_dual, primal, short, below, t)


@njit(cache=True)
def _repair(scores, items, order, users, left, k):  # pragma: no cover - compiled
    """Σ s of the assignment where users, in the order given, each take their best k (by `order`)
    among items with capacity `left`; how many lists ended short of k; how many lists hold each
    item; and each list's positions (U, k), -1 where it is short."""
    total, short = 0.0, 0
    listed = np.zeros(len(left), np.int64)
    chosen = np.full((len(items), k), -1, np.int64)
    for u in users:
        taken = 0
        for c in order[u]:
            item = items[u, c]
            if item != 0 and left[item] >= 1:
                left[item] -= 1
                listed[item] += 1
                total += scores[u, c]
                chosen[u, taken] = c
                taken += 1
                if taken == k:
                    break
        short += taken < k
    return total, short, listed, chosen


@njit(cache=True)
def _lift_to_floors(scores, items, chosen, listed, need, cap, by_item, starts, missing):  # pragma: no cover
    """Raise the items under their floor into lists, one at a time, each by the cheapest swap: of the
    lists holding it as a candidate but not listing it, the one that loses least score by dropping a
    listed item still above its own floor. Updates chosen and listed in place; returns the change of
    Σ s (≤ 0 but for ties)."""
    n_candidates = items.shape[1]
    change = 0.0
    for item in missing:
        while listed[item] < need[item] and listed[item] < cap[item]:
            best, best_flat, best_slot = np.inf, -1, -1
            for flat in by_item[starts[item]:starts[item + 1]]:
                u, c = flat // n_candidates, flat % n_candidates
                holds = False
                for slot in range(chosen.shape[1]):
                    if chosen[u, slot] >= 0 and items[u, chosen[u, slot]] == item:
                        holds = True
                if holds:
                    continue
                for slot in range(chosen.shape[1]):
                    position = chosen[u, slot]
                    if position < 0:
                        continue
                    other = items[u, position]
                    if listed[other] > need[other]:
                        cost = scores[u, position] - scores[u, c]
                        if cost < best:
                            best, best_flat, best_slot = cost, flat, slot
            if best_flat < 0:
                break  # no list can take it without breaking another floor: it stays short
            u, c = best_flat // n_candidates, best_flat % n_candidates
            listed[items[u, chosen[u, best_slot]]] -= 1
            listed[item] += 1
            chosen[u, best_slot] = c
            change -= best
    return change


def lp_prices(scores: np.ndarray, items: np.ndarray, k: int, cap: np.ndarray | None = None,
              floor: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The LP's optimum and its signed item duals p − q (the exact prices), by scipy's HiGHS: small
    instances only (one variable per user and candidate). -> ((I + 1,) prices, optimum)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_array, vstack

    n_prices = len(cap) if cap is not None else len(floor)
    n_users, n_candidates = items.shape
    columns = np.flatnonzero(items.ravel() != 0)
    users, item_of = columns // n_candidates, items.ravel()[columns]
    n = len(columns)
    one_per_list = csr_array((np.ones(n), (users, np.arange(n))), shape=(n_users, n))
    per_item = csr_array((np.ones(n), (item_of, np.arange(n))), shape=(n_prices, n))
    rows, bounds = [], []
    if cap is not None:
        rows, bounds = [per_item], [np.asarray(cap, dtype=np.float64)]
    if floor is not None:
        rows.append(-per_item)  # Σ_u x_ui ≥ floor_i as −Σ_u x_ui ≤ −floor_i
        bounds.append(-np.asarray(floor, dtype=np.float64))
    result = linprog(-np.asarray(scores, dtype=np.float64).ravel()[columns], A_ub=vstack(rows), b_ub=np.concatenate(bounds),
                     A_eq=one_per_list, b_eq=np.full(n_users, float(k)), bounds=(0, 1), method="highs")
    if result.status != 0:
        raise ValueError(f"lp_prices: HiGHS found no optimum ({result.message})")
    duals = -result.ineqlin.marginals  # ≥ 0 per inequality of the maximization
    prices = np.zeros(n_prices)
    if cap is not None:
        prices += duals[:n_prices]
    if floor is not None:
        prices -= duals[-n_prices:]
    return prices, -result.fun


@dataclass(frozen=True)
class ExposurePrices:
    """The two price vectors a policy weighs (policy.EXPOSURE_CAP, policy.EXPOSURE_FLOOR), each the
    solution of its own LP so that either alone, at weight 1, gives its allocation; and how each
    solve went. What the exposure stage writes and a deployed version carries."""

    cap: np.ndarray  # (I + 1,) float64 ≥ 0: prices of 'at most cap_slack × the equal share'
    floor: np.ndarray  # (I + 1,) float64 ≤ 0: subsidies of 'at least `floor` lists'
    settings: dict  # k, cap_slack, floor, iterations, seed
    solves: dict  # {"cap" | "floor": {dual, primal, gap, short_lists, below_floor, iterations}}

    @classmethod
    def none(cls, n_prices: int) -> ExposurePrices:
        """No prices: what a version deployed before them serves with."""
        return cls(np.zeros(n_prices), np.zeros(n_prices), {}, {})

    def to_json(self) -> dict:
        return {"settings": self.settings, "solves": self.solves, "cap": self.cap.tolist(), "floor": self.floor.tolist()}

    @classmethod
    def from_json(cls, payload: dict) -> ExposurePrices:
        return cls(np.asarray(payload["cap"], dtype=np.float64), np.asarray(payload["floor"], dtype=np.float64),
                   payload["settings"], payload["solves"])


def solve_exposure(scores: np.ndarray, items: np.ndarray, n_items: int, k: int, cap_slack: float, floor: float,
                   iterations: int, seed: int) -> ExposurePrices:
    """Both price vectors from every request's candidates: scores, items (U, N)."""
    def summary(solved: PriceSolve) -> dict:
        return {"dual": solved.dual, "primal": solved.primal, "gap": solved.gap if np.isfinite(solved.gap) else None,
                "short_lists": solved.short_lists, "below_floor": solved.below_floor, "iterations": solved.iterations}

    floor_of = floors(items, n_items, floor)
    if floor_of.sum() > len(items) * k:
        # An infeasible floor's subsidies only grow: they would rank every list at random, not spread it.
        raise InputError(f"exposure.floor {floor:g}: the floors ask for {floor_of.sum():.0f} list slots, but the "
                         f"{len(items)} lists hold {len(items) * k}; lower it to at most "
                         f"{len(items) * k / n_items:.2f} (the lists' slots per item)")
    by_cap = solve_prices(scores, items, k, cap=capacities(len(items), k, n_items, cap_slack), iterations=iterations,
                          seed=seed)
    by_floor = solve_prices(scores, items, k, floor=floor_of, iterations=iterations, seed=seed)
    return ExposurePrices(by_cap.prices, by_floor.prices,
                          {"k": k, "cap_slack": cap_slack, "floor": floor, "iterations": iterations, "seed": seed},
                          {"cap": summary(by_cap), "floor": summary(by_floor)})


def opening_cases(users: np.ndarray) -> np.ndarray:
    """Sorted indices of each user's first case in a window (cases sorted by user, then time): the
    lists a version ranks when the window opens, each from its user's history before the window.

    A window's prices are solved from these alone. They are the lists a service serves when it
    opens on the window (what `recmoo reprice` solves from), and no held-out item of the window
    reaches them: a later case's candidates leave out the items its user took earlier in the window,
    so prices solved from every case would see the held-out items by their absence."""
    users = np.asarray(users)
    return np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)


def opening_lists(candidates: dict[str, np.ndarray], window: str) -> tuple[np.ndarray, np.ndarray]:
    """A window's opening lists in candidates.npz's arrays: their (items, scores), (U, N) each."""
    opening = opening_cases(candidates[f"{window}_users"])
    return candidates[f"{window}_items"][opening], candidates[f"{window}_scores"][opening]


def window_prices(candidates: dict[str, np.ndarray], n_items: int, k: int, cap_slack: float, floor: float,
                  iterations: int, seed: int) -> dict[str, ExposurePrices]:
    """Each window's prices from its opening lists (candidates.npz's arrays): what the exposure stage writes."""
    prices = {}
    for window in WINDOW_NAMES:
        items, scores = opening_lists(candidates, window)
        prices[window] = solve_exposure(scores, items, n_items, k, cap_slack, floor, iterations, seed)
    return prices


def load_prices(path: str | Path) -> ExposurePrices:
    """One set of prices: a deployed version's exposure.json."""
    payload = _read(path)
    try:
        return ExposurePrices.from_json(payload)
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a version's exposure prices ({type(err).__name__}: {err})") from err


def load_window_prices(path: str | Path) -> dict[str, ExposurePrices]:
    """The exposure stage's prices, one set per window: {"valid": ..., "test": ...}."""
    payload = _read(path)
    try:
        return {window: ExposurePrices.from_json(payload[window]) for window in WINDOW_NAMES}
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not the exposure stage's prices, one set per window {list(WINDOW_NAMES)} "
                         f"({type(err).__name__}: {err}): rebuild it with `recmoo exposure`") from err


def _read(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise InputError(f"{path}: no exposure prices here (run `recmoo exposure`)")
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:
        raise InputError(f"{path}: not JSON ({err}): rebuild it with `recmoo exposure`") from err
