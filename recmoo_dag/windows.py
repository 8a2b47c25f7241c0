"""Baskets, the held-out windows and the cases a model is judged on: the evaluation protocol.

A user's events that share one timestamp form one *basket*: a set, never an order. ML-100K rates
many films in the same second and Last.fm's tagging log is dated by the day, so an order inside a
basket would be an artefact of the log (or of the item ids it was sorted by), which a sequence model
learns and a held-out item inherits. No item of a basket is ever predicted from another item of the
same basket, no model input carries an order inside one, and evaluation treats all of a basket's
items as relevant at once.

Windows (`features.split`), each a set of whole baskets after every event its user trained on:
- `global_time`: the valid window holds the events at or after the `valid_quantile` of the log's
  timestamps and before the `test_quantile`, the test window the rest (Ji et al., TOIS 2023: a
  model never learns from an event later than what it is judged on; this is what a deployment
  faces). Users are judged in a window only if they have events before it.
- `user_tail`: each user's last baskets, the same number in test and, before them, in valid: a
  `tail_fraction` of the user's baskets, at least 1 and at most `tail_max_baskets`, leaving at least
  one basket to train on. Many more judged baskets on a small log, at the price of global-time
  leakage (a user's test may be older than another user's training events).
- `leave_one_out`: each user's last basket is test, the one before valid (SASRec's and RecBole's
  protocol, with baskets as the unit), for comparison with published tables.
Users with too few baskets for their windows train only.

A window's *cases* are its baskets, predicted successively, each from everything its user did
before it (the valid and earlier test baskets included: what the service would know then); the
relevant items of a case are its basket's items not already in that history (Gusak et al., "Time
to Split", RecSys 2025). Every metric averages a user's cases first, then users.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recmoo_dag.errors import FeaturesError

TRAIN, VALID, TEST = 0, 1, 2
WINDOWS = {"valid": VALID, "test": TEST}
STRATA = 10  # activity groups of a user sample: deciles of history length


def basket_bounds(user_idx: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For events sorted by user then time: the index of the first event of each event's basket and
    one past its last. (N,), (N,) -> (N,) int64, (N,) int64."""
    n = len(user_idx)
    new = np.ones(n, dtype=bool)
    new[1:] = (user_idx[1:] != user_idx[:-1]) | (timestamps[1:] != timestamps[:-1])
    first = np.flatnonzero(new)  # (K,) the first event of every basket
    sizes = np.diff(np.append(first, n))  # (K,)
    return np.repeat(first, sizes).astype(np.int64), np.repeat(first + sizes, sizes).astype(np.int64)


def assign_windows(user_idx: np.ndarray, timestamps: np.ndarray, split: str, valid_quantile: float,
                   test_quantile: float, tail_fraction: float, tail_max_baskets: int) -> np.ndarray:
    """The window of every event (TRAIN, VALID or TEST), events sorted by user then time: (N,) -> (N,) int8."""
    windows = np.zeros(len(user_idx), dtype=np.int8)
    if split == "global_time":
        valid_cut, test_cut = np.quantile(timestamps, [valid_quantile, test_quantile], method="lower")
        windows[timestamps >= valid_cut] = VALID
        windows[timestamps >= test_cut] = TEST
        return windows
    starts, _ = basket_bounds(user_idx, timestamps)
    new_basket = np.r_[True, starts[1:] != starts[:-1]]  # (N,) an event opens a basket
    new_user = np.r_[True, user_idx[1:] != user_idx[:-1]]  # (N,)
    basket = np.cumsum(new_basket) - 1  # (N,) global basket number
    user = np.cumsum(new_user) - 1  # (N,) the user's rank among the users present
    first_basket = basket[new_user]  # (U,)
    n_baskets = np.diff(np.r_[first_basket, basket[-1] + 1])  # (U,)
    if split == "leave_one_out":
        held = np.ones_like(n_baskets)
    else:
        held = np.clip(np.ceil(tail_fraction * n_baskets), 1, tail_max_baskets).astype(np.int64)
    held = np.minimum(held, (n_baskets - 1) // 2)  # both windows, and at least one basket to train on
    from_end = first_basket[user] + n_baskets[user] - basket  # (N,) 1 in the user's last basket
    windows[from_end <= 2 * held[user]] = VALID
    windows[from_end <= held[user]] = TEST
    return windows


@dataclass(frozen=True)
class Histories:
    """Item sequences, one per row, oldest first: row r is positions starts[r]:ends[r] of the
    features' time-ordered event arrays (shared, never copied)."""

    starts: np.ndarray  # (R,) int64
    ends: np.ndarray  # (R,) int64
    items: np.ndarray  # (N,) int32 every event's item
    basket_starts: np.ndarray  # (N,) int64 the first event of every event's basket
    basket_ends: np.ndarray  # (N,) int64 one past the last event of every event's basket

    @property
    def n_rows(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    def rows(self, rows: np.ndarray) -> Histories:
        return replace(self, starts=self.starts[rows], ends=self.ends[rows])

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `rows` of every event, the event's position in the shared arrays), for the events
        of `rows`: -> (n,), (n,) int64."""
        lengths = self.lengths[rows]
        row = np.repeat(np.arange(len(rows)), lengths)
        offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return row, np.repeat(self.starts[rows], lengths) + offset


def histories_of(indptr: np.ndarray, items: np.ndarray, opens: np.ndarray) -> Histories:
    """The sequences items[indptr[r]:indptr[r + 1]], their baskets given by `opens` (True where a
    basket starts; a sequence's first event always does): (R + 1,), (E,), (E,) -> R rows."""
    opens = np.asarray(opens, dtype=bool).copy()
    opens[indptr[:-1][np.diff(indptr) > 0]] = True
    first = np.flatnonzero(opens)
    sizes = np.diff(np.append(first, len(items)))
    return Histories(np.asarray(indptr[:-1], dtype=np.int64), np.asarray(indptr[1:], dtype=np.int64),
                     np.asarray(items, dtype=np.int32), np.repeat(first, sizes).astype(np.int64),
                     np.repeat(first + sizes, sizes).astype(np.int64))


@dataclass(frozen=True)
class Cases:
    """One window's held-out baskets, each predicted from everything its user did before it."""

    window: str
    users: np.ndarray  # (C,) int64 the user of each case
    history: Histories  # C rows: what each case is predicted from
    target_indptr: np.ndarray  # (C + 1,) int64
    targets: np.ndarray  # (T,) int32 each case's relevant items: its basket's items not in its history

    @property
    def n_cases(self) -> int:
        return len(self.users)

    @property
    def target_rows(self) -> np.ndarray:
        """(T,) the case of every target."""
        return np.repeat(np.arange(self.n_cases), np.diff(self.target_indptr))

    @property
    def n_relevant(self) -> np.ndarray:
        """(C,) how many relevant items each case has (>= 1)."""
        return np.diff(self.target_indptr)

    def subset(self, rows: np.ndarray) -> Cases:
        """Some of the cases (sorted row indices), their targets with them."""
        counts = self.n_relevant[rows]
        picked = np.repeat(self.target_indptr[rows], counts) + (
            np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        return replace(self, users=self.users[rows], history=self.history.rows(rows),
                       target_indptr=np.r_[0, np.cumsum(counts)].astype(np.int64), targets=self.targets[picked])


def window_cases(window: str, indptr: np.ndarray, items: np.ndarray, windows: np.ndarray,
                 basket_starts: np.ndarray, basket_ends: np.ndarray, n_items: int) -> Cases:
    """The cases of `window` from events sorted by user then time (see the module docstring)."""
    n_users = len(indptr) - 1
    user_of = np.repeat(np.arange(n_users), np.diff(indptr))  # (N,)
    in_window = windows == WINDOWS[window]  # (N,)
    window_start = np.full(n_users, len(items))
    np.minimum.at(window_start, user_of[in_window], np.flatnonzero(in_window))
    judged = in_window & (window_start[user_of] > indptr[:-1][user_of])  # users with events before it
    # A target is an event of a judged basket whose item its user has not met before: the first
    # occurrence of its (user, item) pair, once per basket.
    pair = user_of.astype(np.int64) * (n_items + 1) + items
    _, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    target = judged & (first[inverse.ravel()] == np.arange(len(items)))  # (N,)
    case_of = basket_starts[target]  # (T,) the first event of each target's basket: its case
    cases, target_counts = np.unique(case_of, return_counts=True)  # by user, then time, as the targets
    users = user_of[cases]
    history = Histories(indptr[users], cases.astype(np.int64), items, basket_starts, basket_ends)
    return Cases(window, users.astype(np.int64), history,
                 np.r_[0, np.cumsum(target_counts)].astype(np.int64), items[target])


def check_window(cases: Cases, minimum: int, split: str) -> None:
    users = len(np.unique(cases.users))
    if users < minimum:
        raise FeaturesError(
            f"features.split {split}: the {cases.window} window holds {users} users with history before it "
            f"(features.min_window_users: {minimum}); a verdict on so few users is noise: use user_tail, "
            f"move the cutoff quantiles earlier or lower min_window_users")


def sample_users(activity: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of n users, stratified by activity: the users, ordered by
    history length, are cut into STRATA equal groups and each group gives its share (largest
    remainders), so heavy and light users are both in it. All users when n is None or >= U."""
    n_users = len(activity)
    if n is None or n >= n_users:
        return np.arange(n_users)
    groups = np.array_split(np.argsort(activity, kind="stable"), STRATA)
    exact = n * np.array([len(g) for g in groups]) / n_users
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]] += 1
    rng = np.random.default_rng([seed, n])
    return np.sort(np.concatenate([rng.choice(g, q, replace=False) for g, q in zip(groups, quota)]))
