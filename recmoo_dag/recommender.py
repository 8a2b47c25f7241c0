"""The deployed policy in memory: a `Recommender` per version, and the live one a service holds.

A request is answered by the same `policy.rerank` the search and the deploy stage use, applied to
one user's candidates with the deployed decision variables. Where the candidates come from:

- `recent_items` given (a live session): the version's generator (the transformer, EASE or their
  blend, as chosen on valid) reads the user's known sequence (empty for an unknown user) followed by
  the recent items, at once, with no retraining; its top-N unseen items are the candidates. Recent
  items the catalog does not know are ignored.
- known `user_id`, no usable recent items: the top-N precomputed at deploy time from the user's
  whole sequence (no forward pass).
- otherwise (unknown or no user, no usable recent items): the N most popular training items, scored
  by log popularity, re-ranked by the same policy (its debias term flattens popularity, its
  calibration term is 0 without a history).
`exclude` removes items from the candidates, and the list is still filled to k (at most N) while
the catalog holds items neither seen, recent nor excluded: a session is scored with the excluded
items masked before its top-N is taken; the popularity fallback takes the N most popular items left;
a known user whose exclusions leave fewer than k of a full row of N candidates (so unseen items lie
beyond it) is scored again by the generator from the whole sequence, as at deploy, with the excluded
items masked (one forward pass; still source "user"). Seen and recent items are never recommended.
Unknown ids never raise: they fall back as above, and the answer's `source` says which path was taken.
The two that need a forward pass are `prepare`d into a `Pending` request; `recommend` scores it at
once and alone, the service's micro-batches score many together (`answer`), with the same lists.
The policy's dither is drawn from the request's `user_id` (the same user gets the same list, known
to the catalog or not); the popularity fallback and requests without a user share the empty id's.

Hot reload: every worker checks the store's CURRENT symlink at most every `serve.reload_check_ms`
(one readlink, no other disk I/O per request). A new target is loaded in a background thread while
requests keep using the old, immutable Recommender; then one reference assignment swaps them, so
no request fails or sees a mix during a promotion or a rollback. The HTTP layer is recmoo_dag/serve.py.
"""
from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmoo_dag import store
from recmoo_dag.batch_scores import BatchScorer, Pending
from recmoo_dag.bundle import Bundle, read_bundle
from recmoo_dag.candidates import best_of
from recmoo_dag.forward_process import ForwardProcess
from recmoo_dag.generator import Generator, sequence_scores
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.policy import POOL, id_keys, policy_vector, rerank
from recmoo_dag.windows import histories_of

PRECOMPUTE_ROWS = 128  # users re-ranked at once when a version loads


@dataclass(frozen=True)
class Recommended:
    items: list[dict]  # [{"item_id", "title", "score"}], best first
    source: str  # "session" | "user" | "popularity"
    version: str


class Recommender:
    """One deployed version in memory, immutable after construction but for the cache of encoded
    histories (at most `cache_bytes`, recmoo_dag/batch_scores.py), which one batch at a time touches."""

    def __init__(self, bundle: Bundle, generator: Generator, version: str, manifest: dict,
                 session_window: int | None = None, cache_bytes: int = 0):
        self.bundle, self.generator, self.version, self.manifest = bundle, generator, version, manifest
        self.scorer = BatchScorer(generator, bundle.ease, cache_bytes)
        # Batches run on the batcher's thread or its loop's, one after the other, but a batch left
        # running by a loop that ended (a test client's) may meet the next loop's.
        self.scoring = threading.Lock()
        self.forwards: ForwardProcess | None = None  # set by `load` when batches run apart
        model = generator.model
        b = bundle
        self.n_candidates = b.cand_items.shape[1]
        self.policy = policy_vector(b.variables)[None]  # (1, d)
        self.item_index = {item: idx for idx, item in enumerate(b.item_ids.tolist()) if idx}
        self.user_index = {user: u for u, user in enumerate(b.user_ids.tolist())}
        self.titles = b.titles.tolist()
        self.item_ids = b.item_ids.tolist()
        self.user_keys = id_keys(b.user_ids)  # (U,) dither keys
        self.anonymous_key = id_keys([""])  # (1,)
        # The policy's per-item terms, built as for the search (novelty scaled by the training users).
        self.terms = ItemTerms.build(b.train_counts, b.n_users, b.item_vectors, b.item_ids, b.prices)
        self.histories = histories_of(b.indptr, b.history, b.opens)  # every known user's whole sequence
        self.profiles = self.terms.profiles(self.histories)  # (U, d)
        counts = np.asarray(b.train_counts)
        popular = np.lexsort((np.arange(len(counts)), -counts))  # most popular first, ties by index
        self.popularity_order = popular[popular != 0].astype(np.int32)  # (I,) every item, most popular first
        self.popular_items = self.popularity_order[: self.n_candidates]  # (N,)
        # Sessions read the last `session_window` items (history + recent): the forward pass grows
        # with the window, and the most recent items carry most of the next-item signal.
        self.window = min(session_window or model.max_len, model.max_len)
        # The greedy's first k picks do not depend on k, so every known user's list (and the
        # anonymous one) is computed once here for the whole pool; a request with k <= pool and no
        # excluded item inside the pool is then a lookup. Rows with padding candidates stay -1.
        self.pool = int(np.clip(round(float(self.policy[0, POOL])), 1, self.n_candidates))
        self.user_lists = self._precompute(b.cand_items, b.cand_scores, self.profiles, self.user_keys)  # (U, pool)
        self.popular_list = self._precompute(self.popular_items[None], self.terms.log_pop[self.popular_items][None],
                                             np.zeros((1, self.terms.unit.shape[1]), np.float32),
                                             self.anonymous_key)[0]

    @classmethod
    def load(cls, folder: str | Path, session_window: int | None = None, cache_bytes: int = 0,
             forward_threads: int = 0) -> Recommender:
        """The version in `folder`; with `forward_threads` > 0 its batches (`answer`) run in a process of
        their own with that many torch threads (recmoo_dag/forward_process.py), which loads meanwhile."""
        folder = Path(folder)
        forwards = ForwardProcess(folder, session_window, cache_bytes, forward_threads) if forward_threads else None
        manifest = store.read_manifest(folder.parent.parent, folder.name)
        bundle = read_bundle(folder)
        recommender = cls(bundle, bundle.generator(), folder.name, manifest, session_window, cache_bytes)
        if forwards is not None:
            forwards.wait_ready()
            recommender.forwards = forwards
        return recommender

    def recommend(self, user_id: str | None = None, recent_items: list[str] | tuple = (), k: int = 10,
                  exclude: list[str] | tuple = ()) -> Recommended:
        """One request answered at once, a forward pass scoring it alone and from scratch
        (`generator.sequence_scores`): the reference that the service's batches (`answer`) equal."""
        pending = self.prepare(user_id, recent_items, k, exclude)
        if isinstance(pending, Recommended):
            return pending
        scores = sequence_scores(self.generator, pending.sequence, pending.opens, pending.window, self.bundle.ease)
        return self._finish([pending], scores[None])[0]

    def answer(self, batch: list[Pending]) -> list[Recommended]:
        """Requests waiting for the generator, scored in one forward pass with the known histories'
        encodings reused (recmoo_dag/batch_scores.py): what the service's micro-batches run."""
        with self.scoring:
            scores = self.scorer.scores(batch)
        return self._finish(batch, scores)

    async def answer_async(self, batch: list[Pending], executor: Executor | None = None,
                           where: str = "process") -> list[Recommended]:
        """`answer`, awaited on the running loop: in the version's forward process ("process", where
        it has one; else as "thread"), on `executor`'s thread ("thread"), or on the loop's own thread,
        which waits meanwhile ("loop"); recmoo_dag/batcher.py says which when."""
        if where == "process" and self.forwards is not None:
            return await self.forwards.answer(batch)
        if where == "loop":
            return self.answer(batch)
        return await asyncio.get_running_loop().run_in_executor(executor, self.answer, batch)

    def prepare(self, user_id: str | None = None, recent_items: list[str] | tuple = (), k: int = 10,
                exclude: list[str] | tuple = ()) -> Recommended | Pending:
        """The answer where no forward pass is needed (precomputed lists, the popularity fallback),
        else the request as it waits for the generator's scores."""
        u = self.user_index.get(user_id) if user_id is not None else None
        recent = np.array([self.item_index[i] for i in recent_items if i in self.item_index], dtype=np.int64)
        excluded = np.array([self.item_index[i] for i in exclude if i in self.item_index], dtype=np.int64)
        span = slice(self.bundle.indptr[u], self.bundle.indptr[u + 1]) if u is not None else slice(0, 0)
        if len(recent):
            # The recent items arrived one by one, after everything known: each is a basket of its own.
            sequence = np.concatenate([self.bundle.history[span], recent]).astype(np.int32)  # (E,) oldest first
            opens = np.concatenate([self.bundle.opens[span], np.ones(len(recent), dtype=bool)])  # (E,)
            profile = self.terms.profile(sequence)  # (d,)
            key = id_keys([user_id]) if user_id is not None else self.anonymous_key
            return Pending(u, sequence, opens, span.stop - span.start, self.window, excluded, k, profile, key,
                           "session")
        if u is not None:
            items, logits = self.bundle.cand_items[u], self.bundle.cand_scores[u]
            if self._precomputed(self.user_lists[u], items, excluded, k):
                return self._answer(items, logits, self.user_lists[u][:k], "user")
            keep = (items != 0) & ~np.isin(items, excluded)
            if keep.sum() < k and (items != 0).all():  # unseen items lie beyond the row: rank them all again
                return Pending(u, self.bundle.history[span], self.bundle.opens[span], span.stop - span.start,
                               self.generator.model.max_len, excluded, k, self.profiles[u], self.user_keys[u:u + 1],
                               "user")
            items, logits = items[keep], logits[keep]
            profile, source, key = self.profiles[u], "user", self.user_keys[u:u + 1]
        else:
            if self._precomputed(self.popular_list, self.popular_items, excluded, k):
                return self._answer(self.popular_items, self.terms.log_pop[self.popular_items],
                                    self.popular_list[:k], "popularity")
            # At most len(excluded) of the first N + len(excluded) items are excluded: N of them are left.
            head = self.popularity_order[: self.n_candidates + len(excluded)]
            items = head[~np.isin(head, excluded)][: self.n_candidates]  # (n,)
            logits = self.terms.log_pop[items]
            profile, source, key = np.zeros(self.terms.unit.shape[1], np.float32), "popularity", self.anonymous_key
        return self._answer(items, logits, self._rerank(items, logits, profile, key, k), source)

    def _answer(self, items: np.ndarray, logits: np.ndarray, picks: np.ndarray, source: str) -> Recommended:
        return Recommended(items=[{"item_id": self.item_ids[i], "title": self.titles[i] or None,
                                   "score": float(s)} for i, s in zip(items[picks], logits[picks])],
                           source=source, version=self.version)

    def _precomputed(self, row: np.ndarray, items: np.ndarray, excluded: np.ndarray, k: int) -> bool:
        """The precomputed list answers: it exists, is long enough, and no excluded item is in the pool."""
        return k <= self.pool and row[0] >= 0 and not (len(excluded) and np.isin(items[:self.pool], excluded).any())

    def _precompute(self, items: np.ndarray, logits: np.ndarray, profiles: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The policy's whole-pool list of each row: items, logits (R, N), profiles (R, d), dither keys
        (R,) -> (R, pool) positions; -1 for rows holding padding candidates (they take the per-request path)."""
        out = np.full((len(items), self.pool), -1, dtype=np.int32)
        full = np.flatnonzero((items[:, :self.pool] != 0).all(axis=1))
        policy = self.policy.copy()
        policy[0, POOL] = self.pool
        for start in range(0, len(full), PRECOMPUTE_ROWS):  # bounded memory: rows x pool x pool similarities
            rows = full[start:start + PRECOMPUTE_ROWS]
            requests = self.terms.requests(items[rows, :self.pool], logits[rows, :self.pool], profiles[rows], keys[rows])
            out[rows] = rerank(requests, policy, self.pool)[0]
        return out

    def _candidates(self, batch: list[Pending], scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The generator's top N for each request of `batch`, as the candidates stage ranks them, with
        seen, recent and excluded items masked: scores (B, I + 1) -> items (B, N) int32, scores (B, N),
        padding (0, -inf) last."""
        rows = np.repeat(np.arange(len(batch)), [len(p.sequence) + len(p.excluded) for p in batch])
        columns = np.concatenate([np.concatenate([p.sequence, p.excluded]) for p in batch]).astype(np.int64)
        scores[rows, columns] = -np.inf  # seen and recent items are never recommended, nor excluded ones
        return best_of(scores, self.n_candidates)

    def _finish(self, batch: list[Pending], scores: np.ndarray) -> list[Recommended]:
        """The answers of `batch` from the generator's scores (B, I + 1): its candidates re-ranked by
        the policy (rows of one pool size at once; a row computes alone, so its list does not depend
        on the batch)."""
        items, item_scores = self._candidates(batch, scores)  # (B, N)
        real = (items != 0).sum(axis=1)  # (B,)
        ks = np.minimum([p.k for p in batch], real)  # (B,)
        pools = np.clip(np.round(self.policy[0, POOL]), ks, real).astype(np.int64)  # (B,) a longer list needs a larger pool
        picks = [np.zeros(0, dtype=np.int64)] * len(batch)
        for pool in np.unique(pools[ks > 0]):
            group = np.flatnonzero((pools == pool) & (ks > 0))  # (R,)
            policy = self.policy.copy()
            policy[0, POOL] = pool
            # The greedy's first k picks do not depend on k: the group's longest list serves every row.
            requests = self.terms.requests(items[group, :pool], item_scores[group, :pool],
                                           np.stack([batch[r].profile for r in group]),
                                           np.concatenate([batch[r].key for r in group]))
            for r, top in zip(group, rerank(requests, policy, int(ks[group].max()))[0]):  # (R, k)
                picks[r] = top[:ks[r]]
        return [self._answer(items[r, :real[r]], item_scores[r, :real[r]], picks[r], p.source)
                for r, p in enumerate(batch)]

    def _rerank(self, items: np.ndarray, logits: np.ndarray, profile: np.ndarray, key: np.ndarray, k: int) -> np.ndarray:
        """Positions of the policy's top-k among `items` (n,) for the history profile (d,) and dither
        key (1,), through a one-user context."""
        n = len(items)
        k = min(k, n)
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        policy = self.policy.copy()
        policy[0, POOL] = np.clip(np.round(policy[0, POOL]), k, n)  # a longer list needs a larger pool
        return rerank(self.terms.requests(items[None], logits[None], profile[None], key), policy, k)[0, 0]


class LiveRecommender:
    """The Recommender of the store's CURRENT version, swapped in the background when CURRENT moves."""

    def __init__(self, store_dir: str | Path, check_ms: int, session_window: int | None = None,
                 cache_bytes: int = 0, forward_threads: int = 0):
        self.store_dir = Path(store_dir)
        self.check_s = check_ms / 1000.0
        self.load_args = (session_window, cache_bytes, forward_threads)
        store.version_dir(self.store_dir)  # fails with a message before the first deployment
        self.target = os.readlink(self._link())
        self.current = Recommender.load(self.store_dir / self.target, *self.load_args)
        self.next_check = time.monotonic() + self.check_s
        self.failed_target: str | None = None
        self._loading = threading.Lock()

    def _link(self) -> Path:
        return self.store_dir / store.CURRENT

    def get(self) -> Recommender:
        now = time.monotonic()
        if now >= self.next_check:
            self.next_check = now + self.check_s
            try:
                target = os.readlink(self._link())
            except OSError as err:  # the store moved away under us: keep serving what we have
                print(f"serve: cannot read {self._link()}: {err}; still serving {self.current.version}",
                      file=sys.stderr)
                return self.current
            if target != self.target and target != self.failed_target and self._loading.acquire(blocking=False):
                threading.Thread(target=self._swap, args=(target,), daemon=True).start()
        return self.current

    def _swap(self, target: str) -> None:
        try:
            fresh = Recommender.load(self.store_dir / target, *self.load_args)
        except Exception as err:  # noqa: BLE001  a broken version must not take the service down: log, keep serving
            self.failed_target = target
            print(f"serve: cannot load {target}: {err}; still serving {self.current.version}", file=sys.stderr)
        else:
            self.current, self.target, self.failed_target = fresh, target, None  # one assignment each
            print(f"serve: now serving {fresh.version}", file=sys.stderr)
        finally:
            self._loading.release()
