"""Yardsticks: the objectives of many policies measured on one window's users (valid or test).

A Yardstick holds a set of users' candidates (a `policy.Requests`), their held-out items and the item
terms, and turns a population of policies into the natural values of every objective
(objectives.OBJECTIVES) and into the normalized losses the search minimizes. The search, the deploy
stage and the benchmarks all measure through it, so a policy gets the same numbers everywhere.

`Yardstick.subset` measures on some users only (the search's `search.users` sample,
features.sample_users).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from recmoo_dag.features import Features
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.metrics import list_metrics, serving_cost, similarity_groups, user_ndcg
from recmoo_dag.objectives import OBJECTIVES
from recmoo_dag.policy import POOL, Requests, accuracy_only_policy, id_keys, recommended_items, rerank

CHUNKS_PER_THREAD = 4  # small chunks even out the threads' work when pool sizes differ
CHUNK = 256  # policies scored at once: their lists (CHUNK x U x k int32) stay ~10 MB at 1k users


@dataclass(frozen=True)
class Yardstick:
    """One window (valid or test) and everything its objectives are measured against."""

    requests: Requests
    targets: np.ndarray  # (U,) held-out item
    terms: ItemTerms  # sim (ILD) and info (novelty bits) among them
    n_items: int
    k: int
    latency: tuple[float, float]  # (intercept_ms, per_candidate_ms) of the serving-cost model
    threads: int = 1

    @cached_property
    def _groups(self) -> tuple[np.ndarray, np.ndarray]:
        return similarity_groups(self.terms.sim)  # same ILD, cache-sized gathers

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
        positions = rerank(self.requests, chunk, self.k)  # (b, U, k)
        groups, group_sim = self._groups
        lists = list_metrics(positions, self.requests.items, self.targets, self.terms.info, group_sim, groups, self.n_items)
        return np.column_stack([lists, serving_cost(chunk[:, POOL], *self.latency)])

    def user_ndcg(self, policies: np.ndarray) -> np.ndarray:
        """Each user's NDCG@k under each policy: (B, d) -> (B, U)."""
        policies = np.atleast_2d(policies)
        return np.concatenate([user_ndcg(recommended_items(self.requests, rerank(self.requests, chunk, self.k, self.threads)),
                                         self.targets) for chunk in np.array_split(policies, -(-len(policies) // CHUNK))])

    @cached_property
    def accuracy_only(self) -> np.ndarray:
        """Natural objectives of the model's own top-k: (6,)."""
        return self.objectives(accuracy_only_policy(self.k))[0]

    def subset(self, users: np.ndarray) -> Yardstick:
        """The same window on some of its users: (S,) sorted indices."""
        c = self.requests
        requests = Requests(items=c.items[users], logits=c.logits[users], log_pop=c.log_pop[users],
                      novelty=c.novelty[users], fit=c.fit[users], dither=c.dither[users], item_sim=c.item_sim)
        return replace(self, requests=requests, targets=self.targets[users])

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
               latency: tuple[float, float], threads: int) -> tuple[Yardstick, Yardstick]:
    """The valid and test windows of the re-ranker (candidates.npz's arrays), with what their
    objectives are measured against: each window's own history builds its users' profiles."""
    user_keys = id_keys(features.user_ids)

    def yard(name: str) -> Yardstick:
        indptr, history = features.history_before(name)
        requests = terms.requests(candidates[f"{name}_items"], candidates[f"{name}_scores"],
                            terms.profiles(indptr, history), user_keys)
        return Yardstick(requests, candidates[f"{name}_targets"], terms, features.n_items, k, latency, threads)

    return yard("valid"), yard("test")
