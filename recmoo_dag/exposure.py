"""Exposure prices across users: the dual prices of the capacitated top-k assignment.

Every user u (a request: a user or a held-out step) gets k of its N candidates; item i may fill at
most cap_i of the U lists. The linear program

    max  Σ_u Σ_c s_uc x_uc    s.t.  Σ_c x_uc = k (each u),  Σ_u x_ui ≤ cap_i (each i),  0 ≤ x ≤ 1

is the relaxation of the capacitated b-matching of Antikacioglu & Ravi (KDD 2017, "Post processing
recommender systems for diversity"). Its Lagrangian dual in the item prices p ≥ 0,

    D(p) = Σ_i cap_i p_i + Σ_u (sum of the k largest s_uc − p_c over u's candidates),

is convex and piecewise linear, and min D equals the LP's optimum (strong duality). `solve_prices`
minimizes D by projected subgradient descent, the batch form of P-MMF's online dual update (Xu et
al., WWW 2023): ∂D/∂p_i = cap_i − n_i(p), with n_i(p) the number of lists holding i when every user
takes its top k of s − p, so an over-exposed item's price rises and an under-used one's falls to 0.
Each iteration is one top-k per user: linear in users × candidates, no LP solver in memory.

The gap is stated, not assumed: D at the best prices is an upper bound on the LP optimum, and a
feasible assignment repaired from them (each user, in a seeded order, takes its top k of s − p among
items with capacity left) is a lower bound. Exact LP prices for small instances: `lp_prices` (scipy's
HiGHS), which the tests compare against.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class PriceSolve:
    prices: np.ndarray  # (I + 1,) float64 ≥ 0, in the units of the scores s
    dual: float  # D(prices): an upper bound on the LP optimum
    primal: float  # value of the assignment repaired from the prices: a lower bound when feasible
    short_lists: int  # lists the repair could not fill to k within the capacities (0: feasible)
    iterations: int

    @property
    def gap(self) -> float:
        """Relative gap (D − primal) / |primal|: how far from the LP optimum both bounds can be;
        infinite when the repair left a list short (no lower bound then)."""
        if self.short_lists:
            return float("inf")
        return (self.dual - self.primal) / max(abs(self.primal), 1e-12)


def capacities(n_lists: int, k: int, n_items: int, slack: float) -> np.ndarray:
    """Each real item may fill `slack` times its equal share of the U·k slots: (I + 1,), padding 0."""
    cap = np.full(n_items + 1, slack * n_lists * k / n_items)
    cap[0] = 0.0
    return cap


def top_k_counts(scores: np.ndarray, items: np.ndarray, prices: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Every user's top k of scores − prices: how many lists hold each item, and the sum of the
    chosen (score − price). scores, items (U, N); prices (I + 1,) -> (I + 1,) int64, float."""
    adjusted = scores - prices[items]  # (U, N)
    top = np.argpartition(-adjusted, k - 1, axis=1)[:, :k]  # (U, k) positions, any order
    chosen = np.take_along_axis(items, top, axis=1)
    return np.bincount(chosen.ravel(), minlength=len(prices)), float(np.take_along_axis(adjusted, top, 1).sum())


def solve_prices(scores: np.ndarray, items: np.ndarray, cap: np.ndarray, k: int, iterations: int = 200,
                 seed: int = 0) -> PriceSolve:
    """Prices minimizing D by projected subgradient, step η_t = η_0 / √t with η_0 the scores' spread
    over the largest excess; the best prices seen are kept (subgradient steps do not descend
    monotonically). scores (U, N) float, finite on real candidates (padding: item 0, any score);
    items (U, N) int; cap (I + 1,) from `capacities`."""
    scores = np.where(items == 0, -1e9, np.asarray(scores, dtype=np.float64))  # padding: never chosen
    prices = np.zeros(len(cap))
    real = scores[items != 0]
    spread = float(real.max() - real.min()) if real.size else 1.0
    best_prices, best_dual = prices.copy(), np.inf
    for t in range(1, iterations + 1):
        counts, value = top_k_counts(scores, items, prices, k)
        dual = float(cap @ prices) + value
        if dual < best_dual:
            best_dual, best_prices = dual, prices.copy()
        excess = counts - cap
        excess[0] = 0.0
        if (excess <= 0).all() and (prices[excess < 0] == 0).all():
            break  # complementary slackness holds: these prices are optimal
        step = spread / max(float(np.abs(excess).max()), 1.0) / np.sqrt(t)
        prices = np.maximum(prices + step * excess, 0.0)
    order = np.argsort(-(scores - best_prices[items]), axis=1, kind="stable")  # (U, N) best first
    users = np.random.default_rng(seed).permutation(len(items))
    primal, short = _repair(scores, items, order, users, np.floor(cap + 1e-9), k)
    return PriceSolve(best_prices, best_dual, primal, short, t)


@njit(cache=True)
def _repair(scores, items, order, users, left, k):  # pragma: no cover - compiled
    """Σ s of the assignment where users, in the order given, each take their best k (by `order`)
    among items with capacity `left`; and how many lists ended short of k."""
    total, short = 0.0, 0
    for u in users:
        taken = 0
        for c in order[u]:
            item = items[u, c]
            if item != 0 and left[item] >= 1:
                left[item] -= 1
                total += scores[u, c]
                taken += 1
                if taken == k:
                    break
        short += taken < k
    return total, short


def lp_prices(scores: np.ndarray, items: np.ndarray, cap: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """The LP's optimum and its capacity duals (the exact prices), by scipy's HiGHS: small instances
    only (one variable per user and candidate). -> ((I + 1,) prices, optimum)."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_array

    n_users, n_candidates = items.shape
    real = items.ravel() != 0
    columns = np.flatnonzero(real)
    users, item_of = columns // n_candidates, items.ravel()[columns]
    n = len(columns)
    one_per_list = csr_array((np.ones(n), (users, np.arange(n))), shape=(n_users, n))
    per_item = csr_array((np.ones(n), (item_of, np.arange(n))), shape=(len(cap), n))
    result = linprog(-np.asarray(scores, dtype=np.float64).ravel()[columns], A_ub=per_item, b_ub=cap,
                     A_eq=one_per_list, b_eq=np.full(n_users, float(k)), bounds=(0, 1), method="highs")
    if result.status != 0:
        raise ValueError(f"lp_prices: HiGHS found no optimum ({result.message})")
    return -result.ineqlin.marginals, -result.fun
