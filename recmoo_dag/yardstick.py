"""Yardsticks: the objectives of many policies measured on one window's held-out baskets (valid or test).

A Yardstick holds the window's cases (windows.Cases: each held-out basket with the history it is
predicted from and its relevant items), their candidates as a `policy.Requests` (one request per
case: what the service would be asked at that moment) and the item terms, and turns a population of
policies into the natural values of every objective (objectives.OBJECTIVES) and into the normalized
losses the search minimizes. Means over cases count every user once (metrics.case_weights). The
search, the deploy stage and the benchmarks all measure through it, so a policy gets the same
numbers everywhere; `user_ndcg` and `item_counts` give what paired intervals resample (uncertainty.py).

`Yardstick.subset` measures on some cases only (the search's `search.baskets` sample, `sample_cases`).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from recmoo_dag.errors import InputError
from recmoo_dag.exposure import ExposurePrices
from recmoo_dag.features import Features
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.metrics import (
    case_ild,
    case_ndcg,
    case_weights,
    coverage_of_counts,
    exposure_gini_of_counts,
    list_metrics,
    personalization_of_counts,
    serving_cost,
    similarity_groups,
    tail_share_of_counts,
)
from recmoo_dag.objectives import CATALOGUE, JUDGED, OBJECTIVES
from recmoo_dag.policy import POOL, Requests, accuracy_only_policy, id_keys, recommended_items, rerank
from recmoo_dag.uncertainty import per_user, weighted_sums
from recmoo_dag.windows import Cases, sample_users

CHUNKS_PER_THREAD = 4  # small chunks even out the threads' work when pool sizes differ
CHUNK = 256  # policies scored at once: their lists (CHUNK x U x k int32) stay ~10 MB at 1k users


@dataclass(frozen=True)
class Yardstick:
    """One window (valid or test) and everything its objectives are measured against."""

    requests: Requests  # one per case
    cases: Cases
    terms: ItemTerms  # sim (ILD) and info (novelty bits) among them
    n_items: int
    k: int
    latency: tuple[float, float]  # (intercept_ms, per_candidate_ms) of the serving-cost model
    threads: int = 1

    @cached_property
    def _groups(self) -> tuple[np.ndarray, np.ndarray]:
        return similarity_groups(self.terms.sim)  # same ILD, cache-sized gathers

    @cached_property
    def weights(self) -> np.ndarray:
        """(C,) each case's weight in a mean over cases: every user once."""
        return case_weights(self.cases.users)

    @cached_property
    def user_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(the window's users (U,), sorted; each case's position among them (C,))."""
        users, compact = np.unique(self.cases.users, return_inverse=True)
        return users, compact.ravel()

    def objectives(self, policies: np.ndarray) -> np.ndarray:
        """Natural values (higher is better but cost) of OBJECTIVES: (B, d) -> (B, 6) float64.

        The policies, ordered by pool size so that no chunk computes scores far beyond its pools,
        are cut into chunks that `threads` threads score in parallel, lists and metrics alike (the
        compiled parts and NumPy's large operations release the GIL). Every policy's values are
        computed on its own, so they depend neither on the chunking nor on the threads."""
        policies = np.atleast_2d(policies)
        by_pool = np.argsort(policies[:, POOL], kind="stable")  # a chunk's width is its largest pool
        n_chunks = min(len(policies), max(CHUNKS_PER_THREAD * self.threads, -(-len(policies) // CHUNK)))
        chunks = np.array_split(policies[by_pool], n_chunks)
        if n_chunks > 1 and self.threads > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                rows = list(pool.map(self._score, chunks))
        else:
            rows = [self._score(chunk) for chunk in chunks]
        out = np.empty((len(policies), len(OBJECTIVES)))
        out[by_pool] = np.concatenate(rows)
        return out

    def _score(self, chunk: np.ndarray) -> np.ndarray:
        positions = rerank(self.requests, chunk, self.k)  # (b, C, k)
        groups, group_sim = self._groups
        lists = list_metrics(positions, self.requests.items, self.cases.target_indptr, self.cases.targets, self.weights,
                             self.terms.info, group_sim, groups, self.n_items)
        return np.column_stack([lists, serving_cost(chunk[:, POOL], *self.latency)])

    def lists(self, policies: np.ndarray) -> np.ndarray:
        """Each policy's lists: (B, d) -> (B, C, k) item indices."""
        policies = np.atleast_2d(policies)
        return np.concatenate([recommended_items(self.requests, rerank(self.requests, chunk, self.k, self.threads))
                               for chunk in np.array_split(policies, -(-len(policies) // CHUNK))])

    def user_ndcg(self, policies: np.ndarray) -> np.ndarray:
        """Each user's mean NDCG@k over their cases, under each policy: (B, d) -> (B, U)."""
        users, compact = self.user_index
        ndcg = case_ndcg(self.lists(policies), self.cases.target_indptr, self.cases.targets)  # (B, C)
        return per_user(ndcg, compact, len(users))

    def replicates(self, policies: np.ndarray, weights: np.ndarray, names: tuple[str, ...] = JUDGED) -> dict[str, np.ndarray]:
        """The named objectives of each policy on the window's users resampled by `weights` (R, U)
        (uncertainty.Bootstrap.weights; ones((1, U)) for the users as they are): {name: (P, R)}.
        NDCG, ILD and novelty are means over users of each user's mean over their baskets; coverage,
        personalization and the catalogue figures (objectives.CATALOGUE) are functions of every list
        of the users drawn, a user drawn twice counting twice (Efron & Tibshirani 1993: resample the
        independent unit, recompute the statistic).
        A resample holds ~63 % distinct users and coverage grows with users, so pooled replicates fall
        below the value measured on everyone; they are recentred on it (each policy's replicates
        shifted by value - their mean), keeping the bootstrap's spread around the measured value."""
        from scipy import sparse

        users, compact = self.user_index
        weights = np.asarray(weights, dtype=np.float64)
        drawn = weights.sum(axis=1)  # (R,)
        lists = self.lists(policies)  # (P, C, k)
        out = {}
        per_case = {"ndcg": lambda: case_ndcg(lists, self.cases.target_indptr, self.cases.targets),
                    "ild": lambda: case_ild(lists, self._groups[1], self._groups[0]),
                    "novelty": lambda: self.terms.info[lists].mean(axis=-1)}
        for name in set(names) & set(per_case):
            out[name] = weighted_sums(per_user(per_case[name](), compact, len(users)), weights) / drawn  # (P, R)
        pooled = {"coverage": lambda c, _: coverage_of_counts(c, self.n_items),
                  "personalization": lambda c, n: personalization_of_counts(c, n, self.k),
                  "exposure_gini": lambda c, _: exposure_gini_of_counts(c),
                  "tail_share": lambda c, _: tail_share_of_counts(c, self.terms.log_pop)}
        wanted = [name for name in pooled if name in names]
        if wanted:
            lists_per_user = np.bincount(compact, minlength=len(users)).astype(np.float64)  # (U,)
            n_lists = weights @ lists_per_user  # (R,)
            for name in wanted:
                out[name] = []
            for policy_lists in lists:  # (C, k)
                incidence = sparse.csr_array((np.ones(policy_lists.size), (np.repeat(compact, self.k),
                                                                           policy_lists.ravel())),
                                             shape=(len(users), self.n_items + 1))
                counts = (incidence.T @ weights.T).T  # (R, I + 1) how many drawn lists hold each item
                everyone = incidence.sum(axis=0)[None]  # (1, I + 1) every user once: the measured value
                for name in wanted:
                    drawn_values = pooled[name](counts, n_lists)
                    out[name].append(drawn_values - drawn_values.mean()
                                     + pooled[name](everyone, lists_per_user.sum()[None])[0])
            for name in wanted:
                out[name] = np.array(out[name])
        return {name: out[name] for name in names}

    def catalogue(self, policies: np.ndarray) -> np.ndarray:
        """objectives.CATALOGUE of each policy's lists on every user once: (B, d) -> (B, 2)."""
        measured = self.replicates(policies, np.ones((1, len(self.user_index[0]))), CATALOGUE)
        return np.column_stack([measured[name][:, 0] for name in CATALOGUE])

    @cached_property
    def accuracy_only(self) -> np.ndarray:
        """Natural objectives of the model's own top-k: (6,)."""
        return self.objectives(accuracy_only_policy(self.k))[0]

    def subset(self, rows: np.ndarray) -> Yardstick:
        """The same window on some of its cases: (S,) sorted indices."""
        c = self.requests
        requests = Requests(items=c.items[rows], logits=c.logits[rows], log_pop=c.log_pop[rows],
                            price_cap=c.price_cap[rows], price_floor=c.price_floor[rows], novelty=c.novelty[rows], fit=c.fit[rows], dither=c.dither[rows], item_sim=c.item_sim)
        return replace(self, requests=requests, cases=self.cases.subset(rows))

    def of_users(self, users: np.ndarray) -> Yardstick:
        """The same window on the cases of some of its users (positions among user_index[0])."""
        _, compact = self.user_index
        return self.subset(np.flatnonzero(np.isin(compact, users)))

    def split_for_confirmation(self, share: float, seed: int, split: int = 0) -> tuple[Yardstick, Yardstick]:
        """(selection, confirmation): the window's users split at random, `share` of them confirming;
        `split` numbers independent splits of one window (deploy.splits: the rule's retries).

        The search finds its front on the selection users alone, and the deploy rule ranks that front
        on them too; the confirmation users then judge the rule's pick having taken no part in either
        choice. Confirming on users the search had seen let the front's luck on them pass for merit:
        with the front searched on every valid user, its median NDCG@10 ratio to accuracy-only sat
        4.3 % above the test ratio on the confirmation users of ml-latest-small and 12.7 % above on
        Last.fm-2K's (README "Choosing, deploying and serving"). share 0: both are the whole window."""
        n_users = len(self.user_index[0])
        # Split 0 keeps the draw it had before retries existed, so its front and verdict stay as they were.
        draw = [seed, n_users, split] if split else [seed, n_users]
        held = np.random.default_rng(draw).random(n_users) < share  # (U,)
        if not held.any():
            return self, self
        return self.of_users(np.flatnonzero(~held)), self.of_users(np.flatnonzero(held))

    def losses(self, natural: np.ndarray) -> np.ndarray:
        """Natural objective values -> the normalized losses of the module docstring: (B, 6)."""
        accuracy_only = self.accuracy_only
        best = np.array([np.nan, 1.0, self.terms.info.max(), 1.0, 1.0])  # best possible ILD, novelty, coverage, pers.
        span = np.maximum(best[1:] - accuracy_only[1:5], 1e-12)  # the model already at the best: any shortfall is huge
        cheapest, dearest = serving_cost(np.array([self.k, self.requests.n_candidates]), *self.latency)
        return np.column_stack([
            1.0 - natural[:, 0] / max(accuracy_only[0], 1e-12),
            (best[1:] - natural[:, 1:5]) / span,
            (natural[:, 5] - cheapest) / max(dearest - cheapest, 1e-12)])


def yardsticks(features: Features, candidates: dict[str, np.ndarray], terms: ItemTerms, k: int,
               latency: tuple[float, float], threads: int,
               prices: dict[str, ExposurePrices] | None = None) -> tuple[Yardstick, Yardstick]:
    """The valid and test windows of the re-ranker (candidates.npz's arrays), with what their
    objectives are measured against: each case's own history builds its profile. With `prices`
    (the exposure stage's), each window weighs its own; else the prices of `terms`."""
    user_keys = id_keys(features.user_ids)

    def yard(name: str) -> Yardstick:
        cases = features.cases(name)
        if not np.array_equal(candidates[f"{name}_users"], cases.users):
            raise InputError(f"candidates.npz: its {name} baskets are not the features' (re-run `dvc repro`)")
        window_terms = terms.priced(prices[name]) if prices is not None else terms
        requests = window_terms.requests(candidates[f"{name}_items"], candidates[f"{name}_scores"],
                                         terms.profiles(cases.history), user_keys[cases.users])
        return Yardstick(requests, cases, window_terms, features.n_items, k, latency, threads)

    return yard("valid"), yard("test")


def sample_cases(cases: Cases, activity: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of at most n cases spread over users: with more users than
    n, n users stratified by activity (windows.sample_users), one case each; else every user, each
    with an even share of n (its cases drawn at random), so the sample's mean over users estimates
    the window's. All cases when n is None or >= C. activity: (U,) per user of the features."""
    if n is None or n >= cases.n_cases:
        return np.arange(cases.n_cases)
    users, compact, counts = np.unique(cases.users, return_inverse=True, return_counts=True)
    compact = compact.ravel()
    rng = np.random.default_rng([seed, n, cases.n_cases])
    share = np.zeros(len(users), dtype=np.int64)
    if n < len(users):
        share[sample_users(activity[users], n, seed)] = 1
    else:
        share[:] = n // len(users)
        share[rng.permutation(len(users))[: n - share.sum()]] += 1
    share = np.minimum(share, counts)
    order = np.lexsort((rng.random(cases.n_cases), compact))  # by user, at random within a user
    rank = np.empty(cases.n_cases, dtype=np.int64)
    rank[order] = np.arange(cases.n_cases) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.flatnonzero(rank < share[compact])
