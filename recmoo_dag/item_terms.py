"""The per-item terms of the re-ranking policy, built in one place from the training data.

The search, the deploy stage and the service all build their `policy.Requests`s here, so the three
see the same numbers for the same request:

    vectors   the similarity space: genre multi-hots, or the model's item embeddings (`item_vectors`)
    unit      those vectors at unit length: users' history profiles (calibration) and cosines
    sim       item-item cosine clipped to [0, 1]: ILD and the diversity penalty (`metrics.item_similarity`)
    log_pop   ln π(i), add-one smoothed train popularity: the debias term (Menon et al. 2021)
    info      self-information in bits (Zhou et al. 2010): the novelty objective
    novelty   info scaled to [0, 1] by its maximum: the novelty term of the score
    item_keys each item's dither key (`policy.id_keys`)
    price_cap, price_floor  the exposure prices solved across users (exposure.py; zeros without)

Novelty is scaled by the number of *training* users, whatever the number of requests, so a live
request gets the terms it would get inside the search's batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from recmoo_dag.errors import InputError
from recmoo_dag.exposure import ExposurePrices
from recmoo_dag.features import Features
from recmoo_dag.metrics import item_similarity, self_information, unit_rows
from recmoo_dag.policy import Requests, dither, id_keys
from recmoo_dag.windows import Histories


def item_vectors(categories: np.ndarray | None, similarity: str, embeddings: Callable[[], np.ndarray],
                 texts: Callable[[], np.ndarray | None] = lambda: None) -> np.ndarray:
    """The similarity space `policy.similarity` asks for: genre multi-hots ('categories'), the item
    texts' sentence embeddings ('text', item_text.py), the model's item vectors ('embeddings'), or
    'auto': categories when the items have any, else texts when there are some, else the model's.
    `embeddings()` and `texts()` (None when there are none) are read only when needed.
    categories (I + 1, C) bool or None -> (I + 1, d) float32."""
    has_categories = categories is not None and bool(categories.any())
    if similarity == "categories" or (similarity == "auto" and has_categories):
        if not has_categories:
            raise InputError("policy.similarity is 'categories' but the items have none: use 'auto', 'text' or "
                             "'embeddings'")
        return categories.astype(np.float32)
    if similarity in ("text", "auto"):
        vectors = texts()
        if vectors is not None and np.abs(vectors).sum() > 0:
            return np.asarray(vectors, dtype=np.float32)
        if similarity == "text":
            raise InputError("policy.similarity is 'text' but there are no item text vectors: run `recmoo item_text` "
                             "on a catalogue with titles, categories or tags")
    return np.asarray(embeddings(), dtype=np.float32)


def history_profiles(history: Histories, unit: np.ndarray, block_events: int = 1 << 20) -> np.ndarray:
    """Mean unit item vector of each row's history, at unit length: Steck 2018's genre distribution
    p(g|u), up to scale, for genre multi-hots. A row's history is a slice of the shared event arrays,
    so its sum is a difference of running sums over the events, taken a block of rows at a time
    (memory stays bounded however many rows share a long prefix). history (R rows), unit (I + 1, d)
    -> (R, d) float32; an empty history gets zeros."""
    out = np.zeros((history.n_rows, unit.shape[1]), dtype=np.float32)
    order = np.argsort(history.starts, kind="stable")
    first = 0
    while first < len(order):
        last, low, high = first + 1, history.starts[order[first]], history.ends[order[first]]
        while last < len(order) and max(high, history.ends[order[last]]) - low <= block_events:
            high = max(high, history.ends[order[last]])
            last += 1
        rows = order[first:last]
        running = np.zeros((high - low + 1, unit.shape[1]))
        np.cumsum(unit[history.items[low:high]], axis=0, out=running[1:])
        sums = running[history.ends[rows] - low] - running[history.starts[rows] - low]  # (r, d)
        out[rows] = sums / np.maximum(history.lengths[rows], 1)[:, None]
        first = last
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


@dataclass(frozen=True)
class ItemTerms:
    vectors: np.ndarray  # (I + 1, d) float32 the similarity space, as given
    unit: np.ndarray  # (I + 1, d) float32
    sim: np.ndarray  # (I + 1, I + 1) float32
    log_pop: np.ndarray  # (I + 1,) float32
    info: np.ndarray  # (I + 1,) float64 bits
    novelty: np.ndarray  # (I + 1,) float32 in [0, 1]
    item_keys: np.ndarray  # (I + 1,) uint64
    price_cap: np.ndarray  # (I + 1,) float32 ≥ 0
    price_floor: np.ndarray  # (I + 1,) float32 ≤ 0

    @classmethod
    def build(cls, train_counts: np.ndarray, n_train_users: int, vectors: np.ndarray, item_ids: np.ndarray,
              prices: ExposurePrices | None = None) -> ItemTerms:
        """train_counts (I + 1,) occurrences in the train split; vectors (I + 1, d); item_ids (I + 1,);
        prices solved on these items (None: every price 0, the terms of a version without them)."""
        counts = np.asarray(train_counts, dtype=np.float64)
        if not len(counts) == len(vectors) == len(item_ids):
            raise InputError(f"item vectors cover {len(vectors) - 1} items, the catalog {len(counts) - 1} and the ids "
                             f"{len(item_ids) - 1}: re-run `dvc repro` so the model follows the features")
        info = self_information(counts, n_train_users)
        probability = (counts + 1.0) / (counts.sum() + len(counts))  # add-one: unseen items stay finite
        vectors = np.asarray(vectors, dtype=np.float32)
        unpriced = np.zeros(len(counts), dtype=np.float32)
        return cls(vectors=vectors, unit=unit_rows(vectors), sim=item_similarity(vectors),
                   log_pop=np.log(probability).astype(np.float32), info=info,
                   novelty=(info / info.max()).astype(np.float32), item_keys=id_keys(item_ids),
                   price_cap=unpriced, price_floor=unpriced).priced(prices)

    def priced(self, prices: ExposurePrices | None) -> ItemTerms:
        """These terms weighing other exposure prices (None: every price 0)."""
        prices = prices or ExposurePrices.none(len(self.log_pop))
        if len(prices.cap) != len(self.log_pop):
            raise InputError(f"the exposure prices cover {len(prices.cap) - 1} items, the catalog "
                             f"{len(self.log_pop) - 1}: re-run `dvc repro` so the prices follow the candidates")
        return replace(self, price_cap=prices.cap.astype(np.float32), price_floor=prices.floor.astype(np.float32))

    def profiles(self, history: Histories) -> np.ndarray:
        """Each row's unit-length history profile: (R rows) -> (R, d)."""
        return history_profiles(history, self.unit)

    def profile(self, items: np.ndarray) -> np.ndarray:
        """One sequence's profile, as `profiles` gives it (up to float rounding), without building a
        `Histories`: a live request's, ten times cheaper. (E,) -> (d,) float32."""
        total = self.unit[items].sum(axis=0, dtype=np.float64)  # (d,) the mean's direction
        return (total / max(np.linalg.norm(total), 1e-12)).astype(np.float32)

    def requests(self, items: np.ndarray, logits: np.ndarray, profiles: np.ndarray, user_keys: np.ndarray) -> Requests:
        """The policy's view of a set of requests: candidate items and logits (R, N), the users'
        profiles (R, d) from `profiles` and dither keys (R,) from `policy.id_keys`."""
        items = np.asarray(items, dtype=np.int32)
        if not items.shape[0] == len(profiles) == len(user_keys) or np.shape(logits) != items.shape:
            raise ValueError(f"ItemTerms.requests: candidates {items.shape}, scores {np.shape(logits)}, "
                             f"{len(profiles)} profiles and {len(user_keys)} user keys disagree")
        fit = np.einsum("und,ud->un", self.unit[items], profiles)  # (R, N) cosine to the user's profile
        return Requests(items=items, logits=np.asarray(logits, dtype=np.float32), log_pop=self.log_pop[items],
                        price_cap=self.price_cap[items], price_floor=self.price_floor[items],
                       novelty=self.novelty[items], fit=np.clip(fit, 0.0, 1.0).astype(np.float32),
                       dither=dither(user_keys, self.item_keys, items), item_sim=self.sim)


def training_terms(features: Features, similarity: str, embeddings: Callable[[], np.ndarray],
                   texts: Callable[[], np.ndarray | None] = lambda: None) -> ItemTerms:
    """The terms of the features' catalog: train popularity, its users and the similarity space
    `policy.similarity` names, unpriced (`ItemTerms.priced` weighs a window's exposure prices)."""
    vectors = item_vectors(features.categories, similarity, embeddings, texts)
    return ItemTerms.build(features.train_counts, features.n_users, vectors, features.item_ids)
