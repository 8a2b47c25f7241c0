"""The generator's scores for a batch of requests at once, each known user's encoded history reused:
what the service's micro-batches (recmoo_dag/batcher.py) compute.

One forward pass serves the whole batch. Its rows are the new positions of each request, left-padded
to the longest (item 0, basket -1: the model's own padding, hidden from every query), read after
the cached keys and values of their user's history, themselves left-padded to the longest. The answers
are those of `generator.sequence_scores` (the unbatched path, one sequence at a time, nothing
cached) up to float rounding; tests/test_serve_batching.py compares the two.

What is reused, and why that is exact. The transformer is block-causal over baskets and embeds a
basket's position as its number counted from the window's first basket (recmoo_dag/model.py). So
every layer's keys and values at the history's positions depend only on the history's events inside
the window and their numbering, i.e. on (user, the window's first event), never on the recent
items after them. They are cached under that key, and a request then computes only its recent
items' positions, which attend to the cached ones (`SeqRecModel.encode`'s `past`). The final hidden
state alone would not do: the recent items are new positions after it, and it is not an input of
theirs. Where exact reuse stops: once a user's history plus session outgrows the window
(`serve.session_window`), the window's first basket moves with every new recent item, every position
number shifts, and the whole window is encoded again (its keys are then cached for the next request
with as many recent items). The events a user posted to the service (POST /events) arrive as recent
items: new positions, never cached as history. A sequence without recent items (a known user scored
again because exclusions emptied the candidates) ends on a known basket: nothing is new, so it is
encoded whole.
EASE's x_u B is linear in the user's item set, so the sum of B's rows over the known history is
cached per user and a request adds the rows of the recent items the history lacks.

Both caches live in the Recommender of one version (a promoted version starts empty), bounded
together by `serve.history_cache_mb`, least recently used out first; one batch at a time reads and
writes them (`Recommender.answer` holds a lock): the forward process's (recmoo_dag/forward_process.py),
or, where batches run in the worker, the micro-batcher's thread or its event loop's.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from recmoo_dag.evaluate import left_padded
from recmoo_dag.generator import Generator
from recmoo_dag.model import basket_means
from recmoo_dag.windows import histories_of


@dataclass(frozen=True)
class Pending:
    """A request that waits for the generator's scores (`Recommender.prepare` builds it)."""

    user: int | None  # the known user's row; None: unknown or no user (nothing cached)
    sequence: np.ndarray  # (E,) int32 the known history, then the recent items, oldest first
    opens: np.ndarray  # (E,) bool True where a basket starts
    known: int  # the first `known` events of `sequence` are the user's history as deployed (cacheable)
    window: int  # the transformer reads the last baskets that fit this many events
    excluded: np.ndarray  # (X,) int64 items never to return
    k: int
    profile: np.ndarray  # (d,) float32 the policy's history profile of `sequence`
    key: np.ndarray  # (1,) uint64 the policy's dither key
    source: str  # "session" | "user"


class LruCache:
    """Arrays by key, the least recently used forgotten beyond `budget` bytes in all."""

    def __init__(self, budget: int):
        self.budget, self.used = budget, 0
        self.entries: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, key: tuple) -> np.ndarray | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        size = value.nbytes
        if size > self.budget or key in self.entries:
            return
        self.entries[key] = value
        self.used += size
        while self.used > self.budget:
            _, dropped = self.entries.popitem(last=False)
            self.used -= dropped.nbytes


class BatchScorer:
    """Scores of every item after each of a batch of sequences, the known histories' encodings
    reused (module docstring); `ease`: EASE's weights (I + 1, I + 1) when the generator uses them."""

    def __init__(self, generator: Generator, ease: np.ndarray | None, cache_bytes: int):
        self.generator, self.ease = generator, ease
        self.cache = LruCache(cache_bytes)

    def scores(self, batch: list[Pending]) -> np.ndarray:
        """-> (B, I + 1) float32, column 0 (padding) -inf; nothing masked yet."""
        kind = self.generator.kind
        return self.generator.combine(self._model_scores(batch) if kind != "ease" else None,
                                      self._ease_scores(batch) if kind != "model" else None)

    def _windows(self, batch: list[Pending]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each request's window as the transformer reads it (`evaluate.left_padded`, padding cut
        off): items, baskets (n,) int64 each."""
        lengths = np.array([len(p.sequence) for p in batch])
        history = histories_of(np.r_[0, np.cumsum(lengths)], np.concatenate([p.sequence for p in batch]),
                               np.concatenate([p.opens for p in batch]))
        out: list = [None] * len(batch)
        for window in {p.window for p in batch}:
            rows = np.array([r for r, p in enumerate(batch) if p.window == window])
            width = min(window, self.generator.model.max_len)
            items, baskets = left_padded(history, rows, width)  # (R, width) each
            for row, row_items, row_baskets in zip(rows, items, baskets):
                real = int((row_baskets >= 0).sum())
                out[row] = (row_items[width - real:], row_baskets[width - real:])
        return out

    def _model_scores(self, batch: list[Pending]) -> np.ndarray:
        model = self.generator.model
        # Per row: the cached keys and values of its history part (or None), then the positions to compute.
        pasts, news, misses = [], [], []
        for row, (p, (items, baskets)) in enumerate(zip(batch, self._windows(batch))):
            start = len(p.sequence) - len(items)  # the window's first event
            n_known = p.known - start  # history events inside the window
            cacheable = p.user is not None and 0 < n_known < len(items)
            key = ("keys", p.user, p.known, start)
            cached = self.cache.get(key) if cacheable else None
            if cached is None:
                pasts.append(None)
                news.append((items, baskets))
                if cacheable:
                    misses.append((row, key, n_known))
            else:
                pasts.append((cached, baskets[:n_known]))
                news.append((items[n_known:], baskets[n_known:]))
        B, n_new = len(batch), max(len(items) for items, _ in news)
        n_past = max((len(past[1]) for past in pasts if past is not None), default=0)
        # Assembled in NumPy, whose row copies cost a tenth of torch's indexing, then shared with torch.
        seq = np.zeros((B, n_new), dtype=np.int64)  # (B, L) left-padded with item 0
        new_baskets = np.full((B, n_new), -1, dtype=np.int64)  # (B, L)
        for row, (items, baskets) in enumerate(news):
            seq[row, n_new - len(items):], new_baskets[row, n_new - len(items):] = items, baskets
        past = past_baskets = None
        if n_past:
            heads = model.blocks[0].attn.n_heads
            stacked = np.zeros((len(model.blocks), 2, B, heads, n_past, model.item_embedding.embedding_dim // heads),
                               dtype=np.float32)  # (layers, k|v, B, H, P, D/H) left-padded, hidden by the mask
            past_baskets = np.full((B, n_past), -1, dtype=np.int64)  # (B, P)
            for row, cached in enumerate(pasts):
                if cached is not None:
                    keys_values, known_baskets = cached  # (layers, 2, H, p, D/H), (p,)
                    stacked[:, :, row, :, n_past - len(known_baskets):] = keys_values
                    past_baskets[row, n_past - len(known_baskets):] = known_baskets
            past = [(torch.from_numpy(layer[0]), torch.from_numpy(layer[1])) for layer in stacked]  # 2 x (B, H, P, D/H)
            past_baskets = torch.from_numpy(past_baskets)
        new_baskets = torch.from_numpy(new_baskets)
        with torch.inference_mode():
            hidden, presents = model.encode(torch.from_numpy(seq), new_baskets, past, past_baskets)  # (B, L, D)
            scores = model.scores_of(basket_means(hidden, new_baskets)[:, -1]).numpy()  # (B, I + 1)
            if misses:
                presents = np.stack([np.stack([k.numpy(), v.numpy()]) for k, v in presents])  # (layers, 2, B, H, P + L, D/H)
        for row, key, n_known in misses:
            # The row's window starts at key column P + L - len(window); its history is the first n_known.
            first = n_past + n_new - len(news[row][0])
            self.cache.put(key, presents[:, :, row, :, first:first + n_known].copy())  # (layers, 2, H, p, D/H)
        return scores

    def _ease_scores(self, batch: list[Pending]) -> np.ndarray:
        """x_u B of each row: (B, I + 1) float32, over the unique items of its whole sequence."""
        out = np.empty((len(batch), self.ease.shape[1]), dtype=np.float32)
        for row, p in enumerate(batch):
            if p.user is None:
                out[row] = self.ease[np.unique(p.sequence)].sum(axis=0, dtype=np.float32)
                continue
            key = ("ease", p.user, p.known)
            known = self.cache.get(key)
            if known is None:
                known = self.ease[np.unique(p.sequence[:p.known])].sum(axis=0, dtype=np.float32)  # (I + 1,)
                self.cache.put(key, known)
            # The recent items the history lacks, each once (sets: a handful of items, where np.setdiff1d's
            # sorting costs ten times as much).
            history = set(p.sequence[:p.known].tolist())
            new = sorted({item for item in p.sequence[p.known:].tolist() if item not in history})
            out[row] = known + self.ease[new].sum(axis=0, dtype=np.float32) if new else known
        return out
