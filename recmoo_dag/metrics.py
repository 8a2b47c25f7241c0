"""Evaluation metrics, vectorized over users (and over a population of policies where it matters).

Two families live here: accuracy of the model's full ranking (NDCG/HR/MRR, written with the model)
and the beyond-accuracy measures of a re-ranked top-k list that the Pareto search trades off.
Every function takes plain arrays and returns plain arrays or floats.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from recmoo_dag.results import Accuracy

# ---------------------------------------------------------------------------------------------
# Accuracy of the full ranking (model section)
# ---------------------------------------------------------------------------------------------

def rank_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's held-out item in a full ranking of the catalog.

    Full ranking, not a sampled one: sampled metrics can reorder models (Krichene & Rendle 2020).
    Callers set seen items and the padding item 0 to -inf. Ties count against the target
    (rank = how many *other* items score >= it), so a constant scorer is not rewarded; a target
    scored -inf (masked as seen) lands at the bottom and counts as a miss.
    scores: (U, I + 1) float; targets: (U,) int -> (U,) int64.
    """
    scores = np.asarray(scores)
    if np.isnan(scores).any():
        raise ValueError("rank_of_targets: scores contain NaN (diverged model or bad masking)")
    target_scores = scores[np.arange(len(targets)), targets]  # (U,)
    return (scores >= target_scores[:, None]).sum(axis=1) - 1  # (U,) minus the target itself


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per user: 1 / log2(rank + 2) if rank < k else 0 (IDCG = 1).

    Järvelin & Kekäläinen 2002; leave-one-out full-ranking protocol as in Krichene & Rendle 2020.
    ranks: (U,) 0-based.
    """
    ranks = np.asarray(ranks)
    return float(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean HR@k (= recall@k with one held-out item): share of users whose target ranks in the top k."""
    return float((np.asarray(ranks) < k).mean())


def mrr(ranks: np.ndarray) -> float:
    """Mean reciprocal rank over the full ranking, 1 / (rank + 1), no cutoff (Voorhees 1999)."""
    return float((1.0 / (np.asarray(ranks) + 1.0)).mean())


def accuracy(ranks: np.ndarray, k: int) -> Accuracy:
    """The accuracy triple every report uses: NDCG@k, HR@k and MRR."""
    return Accuracy(k, ndcg_at_k(ranks, k), hit_rate_at_k(ranks, k), mrr(ranks))



# ---------------------------------------------------------------------------------------------
# Beyond accuracy: lists of recommended items, shape (..., U, k), leading axes = policies
# ---------------------------------------------------------------------------------------------


def list_ndcg(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mean NDCG@k of top-k lists against one held-out item per user, full-ranking semantics.

    With a single relevant item, NDCG@k = 1 / log2(rank + 2) if the target sits at 0-based `rank`
    of the list and 0 when it is absent (IDCG = 1). The list is a re-ranking of *all* unseen items,
    so a target outside the candidate pool counts as a miss, never as skipped (Krichene & Rendle 2020).

    recs: (..., U, k) item indices; targets: (U,) -> (...) mean over users.
    """
    return user_ndcg(recs, targets).mean(axis=-1)


def user_ndcg(recs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each user's NDCG@k, the terms `list_ndcg` averages: (..., U, k), (U,) -> (..., U)."""
    k = recs.shape[-1]
    gains = 1.0 / np.log2(np.arange(k) + 2.0)  # (k,)
    hit = recs == targets[:, None]  # (..., U, k); items are unique in a list: at most one hit
    return hit @ gains


def self_information(train_counts: np.ndarray, n_users: int) -> np.ndarray:
    """Self-information of each item in bits, log2((U + 1) / (k_i + 1)) (Zhou et al., PNAS 2010).

    Zhou et al. define novelty as log2(U / k_i) with k_i the item's degree (users who took it).
    Train event counts stand in for the degree, capped at U for logs with repeat consumption so the
    value stays >= 0; the add-one smoothing keeps items unseen in train finite (the maximum, log2(U + 1)).
    train_counts: (I + 1,) -> (I + 1,) float64.
    """
    degree = np.minimum(np.asarray(train_counts, dtype=np.float64), n_users)
    return np.log2((n_users + 1.0) / (degree + 1.0))


def novelty(recs: np.ndarray, info: np.ndarray) -> np.ndarray:
    """Mean self-information (bits) of recommended items (Zhou et al. 2010; Castells et al. 2011).

    recs: (..., U, k); info: (I + 1,) from `self_information` -> (...).
    """
    return info[recs].mean(axis=(-2, -1))


def item_similarity(vectors: np.ndarray) -> np.ndarray:
    """Item-item cosine similarity clipped to [0, 1], the similarity behind ILD and the MMR penalty.

    Vectors are genre multi-hots (content similarity, as in Kaminskas & Bridge 2016) or the model's
    item embeddings when there is no metadata. Items with an all-zero vector are similar to nothing.
    Negative cosines count as "fully dissimilar" so that dissimilarity 1 - sim stays in [0, 1].
    vectors: (I + 1, d) -> (I + 1, I + 1) float32, O(I^2) memory (fine up to ~20k items).
    """
    unit = unit_rows(vectors)
    return np.clip(unit @ unit.T, 0.0, 1.0)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1, all-zero rows left at zero: (n, d) -> (n, d) float32."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def similarity_groups(sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items with identical similarity rows (e.g. the same genre set) merged into groups.

    Returns groups (I + 1,) int32 and the (G, G) similarity between groups; ML-100K's 1,350 items
    form ~220 genre groups, so ILD's gathers hit a table that fits in cache. Exact: sim(i, j) ==
    group_sim[groups[i], groups[j]].
    """
    _, first, groups = np.unique(sim, axis=0, return_index=True, return_inverse=True)
    return groups.astype(np.int32).ravel(), np.ascontiguousarray(sim[first][:, first])


def intra_list_diversity(recs: np.ndarray, sim: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """ILD@k: mean pairwise dissimilarity 1 - sim(i, j) over the k(k-1)/2 pairs of each list,
    averaged over users (Kaminskas & Bridge 2016, eq. for ILD; Ziegler et al. 2005).

    recs: (..., U, k); sim: (I + 1, I + 1) from `item_similarity`, or the group similarity of
    `similarity_groups` together with its `groups` -> (...).
    """
    if groups is not None:
        recs = groups[recs]
    lead, (n_users, k) = recs.shape[:-2], recs.shape[-2:]
    lists = np.ascontiguousarray(recs.reshape(-1, n_users, k), dtype=np.int64)
    summed = _pair_similarity_sums(lists, np.ascontiguousarray(sim, dtype=np.float32))  # (B,)
    return (1.0 - summed / (n_users * (k * (k - 1) // 2))).reshape(lead)


@njit(cache=True, nogil=True)
def _pair_similarity_sums(lists, sim):  # pragma: no cover - compiled
    """Sum of sim over every unordered pair of each list, per policy: (B, U, k) -> (B,) float64."""
    n_policies, n_users, k = lists.shape
    out = np.zeros(n_policies)
    for b in range(n_policies):
        total = 0.0
        for u in range(n_users):
            row = lists[b, u]
            for i in range(k - 1):
                sims = sim[row[i]]
                for j in range(i + 1, k):
                    total += sims[row[j]]
        out[b] = total
    return out


def _list_counts(recs: np.ndarray, n_items: int) -> np.ndarray:
    """How many users' lists hold each item, per policy: (..., U, k) -> (..., I + 1) int64."""
    lead = recs.shape[:-2]
    flat = recs.reshape(-1, recs.shape[-2] * recs.shape[-1])  # (B, U*k)
    offsets = (np.arange(len(flat)) * (n_items + 1))[:, None]  # one bincount for every policy
    counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * (n_items + 1))
    return counts.reshape(*lead, n_items + 1)


def coverage(recs: np.ndarray, n_items: int) -> np.ndarray:
    """Catalog coverage@k: share of the n_items real items that appear in at least one user's list
    (Ge et al. 2010, "prediction coverage"). recs: (..., U, k) with items in 1..n_items -> (...)."""
    return (_list_counts(recs, n_items)[..., 1:] > 0).sum(axis=-1) / n_items


def personalization(recs: np.ndarray, n_items: int) -> np.ndarray:
    """1 - mean overlap |L_u ∩ L_v| / k over all user pairs u < v (Zhou et al., PNAS 2010, "personalization").

    Exact in O(U k): a pair shares item i iff both lists hold it, so the summed overlap over pairs
    is sum_i C(n_i, 2), with n_i the number of lists holding i (items are unique within a list).
    recs: (..., U, k) -> (...); needs U >= 2.
    """
    n_users, k = recs.shape[-2:]
    if n_users < 2:
        raise ValueError("personalization needs at least 2 users' lists")
    counts = _list_counts(recs, n_items).astype(np.float64)
    shared = (counts * (counts - 1) / 2).sum(axis=-1)  # (...,) summed overlaps over all pairs
    return 1.0 - shared / (n_users * (n_users - 1) / 2 * k)


LIST_METRICS = ("ndcg", "ild", "novelty", "coverage", "personalization")


def list_metrics(positions: np.ndarray, candidates: np.ndarray, targets: np.ndarray, info: np.ndarray,
                 sim: np.ndarray, groups: np.ndarray, n_items: int) -> np.ndarray:
    """`list_ndcg`, `intra_list_diversity`, `novelty`, `coverage` and `personalization` of many
    policies' lists in one compiled pass, the search's inner loop (the functions above are the
    definitions; a test holds this equal to them).

    positions (B, U, k) indices into each user's row of candidates (U, N); targets (U,); info
    (I + 1,) bits; sim and groups from `similarity_groups` -> (B, 5) float64 in LIST_METRICS order.
    """
    positions = np.ascontiguousarray(positions, dtype=np.int32)
    return _list_metrics(positions, np.ascontiguousarray(candidates, dtype=np.int32),
                         np.asarray(targets, dtype=np.int64), np.asarray(info, dtype=np.float64),
                         np.ascontiguousarray(sim, dtype=np.float32), np.asarray(groups, dtype=np.int64), n_items)


@njit(cache=True, nogil=True)
def _list_metrics(positions, candidates, targets, info, sim, groups, n_items):  # pragma: no cover - compiled
    n_policies, n_users, k = positions.shape
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    out = np.empty((n_policies, 5))
    counts = np.zeros(n_items + 1, np.int64)
    items = np.empty(k, np.int64)
    for b in range(n_policies):
        counts[:] = 0
        ndcg = pair_sim = bits = 0.0
        for u in range(n_users):
            for t in range(k):
                item = candidates[u, positions[b, u, t]]
                items[t] = item
                counts[item] += 1
                bits += info[item]
                if item == targets[u]:
                    ndcg += gains[t]
            for i in range(k - 1):
                row = sim[groups[items[i]]]
                for j in range(i + 1, k):
                    pair_sim += row[groups[items[j]]]
        covered = shared = 0
        for item in range(1, n_items + 1):
            covered += counts[item] > 0
            shared += counts[item] * (counts[item] - 1) // 2
        out[b, 0] = ndcg / n_users
        out[b, 1] = 1.0 - pair_sim / (n_users * (k * (k - 1) // 2))
        out[b, 2] = bits / (n_users * k)
        out[b, 3] = covered / n_items
        out[b, 4] = 1.0 - shared / (n_users * (n_users - 1) / 2 * k)
    return out


def serving_cost(pool: np.ndarray, intercept_ms: float, per_candidate_ms: float) -> np.ndarray:
    """Modelled latency (ms) of re-ranking one request at pool size `pool`: a + b * pool.

    a and b are fitted once by least squares on measured single-request latencies of
    `policy.rerank` (benchmarks/bench_search.py --fit-latency) and kept in params.yaml, so the
    objective is deterministic and the search never times anything.
    """
    return intercept_ms + per_candidate_ms * np.asarray(pool, dtype=np.float64)
