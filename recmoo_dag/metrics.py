"""Evaluation metrics, vectorized over users (and over a population of policies where it matters).

Two families live here: accuracy of a full ranking of the catalog for each held-out basket (NDCG,
HR, recall, MRR with several relevant items) and the beyond-accuracy measures of a re-ranked top-k
list that the Pareto search trades off. Every function takes plain arrays and returns plain arrays.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# ---------------------------------------------------------------------------------------------
# Accuracy of the full ranking: one held-out basket (a case) at a time, several relevant items each
# ---------------------------------------------------------------------------------------------

def target_ranks(scores: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each relevant item in a full ranking of its row's catalog.

    Full ranking, not a sampled one: sampled metrics can reorder models (Krichene & Rendle 2020).
    Callers set seen items and the padding item 0 to -inf. Ties count against the target (rank = how
    many *other* items score >= it), so a constant scorer is not rewarded; a target scored -inf lands
    at the bottom and counts as a miss. The other relevant items of the row count like any item:
    they take list positions too.
    scores (B, I + 1) float; rows (t,) the row of each target; targets (t,) -> (t,) int64.
    """
    scores = np.asarray(scores)
    if np.isnan(scores).any():
        raise ValueError("target_ranks: scores contain NaN (diverged model or bad masking)")
    target_scores = scores[rows, targets]  # (t,)
    return (scores[rows] >= target_scores[:, None]).sum(axis=1) - 1  # (t,) minus the target itself


def discounts(n: int) -> np.ndarray:
    """1 / log2(position + 2) for positions 0..n-1: (n,)."""
    return 1.0 / np.log2(np.arange(n) + 2.0)


def basket_accuracy(ranks: np.ndarray, target_indptr: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """NDCG@k, HR@k, recall@k and reciprocal rank of every case, all of its relevant items at once.

    NDCG@k = sum over relevant items ranked < k of 1 / log2(rank + 2), over the ideal
    sum_{p < min(n, k)} 1 / log2(p + 2) (Järvelin & Kekäläinen 2002); HR@k: any relevant item in the
    top k; recall@k: the share of min(n, k) relevant items there (Liang et al. 2018's normalization,
    which keeps 1 reachable); reciprocal rank: of the best-ranked relevant item (Voorhees 1999).
    ranks (T,) grouped by case; target_indptr (C + 1,) -> {"ndcg", "hr", "recall", "rr"}: (C,) each.
    """
    ranks = np.asarray(ranks)
    n = np.diff(target_indptr)  # (C,) relevant items per case
    case = np.repeat(np.arange(len(n)), n)  # (T,)
    hits = ranks < k  # (T,)
    gain = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)  # (T,)
    ideal = np.cumsum(discounts(k))[np.minimum(n, k) - 1]  # (C,)
    n_hits = np.bincount(case, weights=hits, minlength=len(n))
    best = np.full(len(n), np.iinfo(np.int64).max)
    np.minimum.at(best, case, ranks)
    return {"ndcg": np.bincount(case, weights=gain, minlength=len(n)) / ideal, "hr": (n_hits > 0).astype(np.float64),
            "recall": n_hits / np.minimum(n, k), "rr": 1.0 / (best + 1.0)}


# ---------------------------------------------------------------------------------------------
# Beyond accuracy: lists of recommended items, shape (..., C, k): one list per held-out basket (a
# case, what a request at that moment would get), leading axes = policies. Means over cases are
# weighted (`case_weights`: each user once, their cases equally); coverage and personalization
# pool every list.
# ---------------------------------------------------------------------------------------------


def case_weights(case_users: np.ndarray) -> np.ndarray:
    """Each case's weight in a mean that counts every user once and a user's cases equally: (C,) ->
    (C,) float64 summing to 1."""
    _, compact, counts = np.unique(case_users, return_inverse=True, return_counts=True)
    return 1.0 / (len(counts) * counts[compact.ravel()])


def case_ndcg(recs: np.ndarray, target_indptr: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """NDCG@k of every list against its case's relevant items, full-ranking semantics: a relevant
    item outside the list (or the candidate pool) is a miss, never skipped (Krichene & Rendle 2020).
    recs (..., C, k); target_indptr (C + 1,), targets (T,) -> (..., C)."""
    k = recs.shape[-1]
    n = np.diff(target_indptr)  # (C,)
    span = int(np.asarray(targets).max(initial=0)) + 1
    wanted = np.repeat(np.arange(len(n)), n) * span + targets  # (T,) (case, item) keys
    keys = np.arange(recs.shape[-2])[:, None] * span + np.minimum(recs, span - 1)  # (..., C, k)
    hit = np.isin(keys, wanted) & (recs < span)  # items are unique in a list
    ideal = np.cumsum(discounts(k))[np.minimum(n, k) - 1]  # (C,)
    return (hit @ discounts(k)) / ideal


def list_ndcg(recs: np.ndarray, target_indptr: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean NDCG@k over cases, weighted: (..., C, k) -> (...)."""
    return case_ndcg(recs, target_indptr, targets) @ weights


def self_information(train_counts: np.ndarray, n_users: int) -> np.ndarray:
    """Self-information of each item in bits, log2((U + 1) / (k_i + 1)) (Zhou et al., PNAS 2010).

    Zhou et al. define novelty as log2(U / k_i) with k_i the item's degree (users who took it).
    Train event counts stand in for the degree, capped at U for logs with repeat consumption so the
    value stays >= 0; the add-one smoothing keeps items unseen in train finite (the maximum, log2(U + 1)).
    train_counts: (I + 1,) -> (I + 1,) float64.
    """
    degree = np.minimum(np.asarray(train_counts, dtype=np.float64), n_users)
    return np.log2((n_users + 1.0) / (degree + 1.0))


def novelty(recs: np.ndarray, info: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean self-information (bits) of recommended items (Zhou et al. 2010; Castells et al. 2011).

    recs: (..., C, k); info: (I + 1,) from `self_information`; weights (C,) -> (...).
    """
    return info[recs].mean(axis=-1) @ weights


def item_similarity(vectors: np.ndarray) -> np.ndarray:
    """Item-item cosine similarity clipped to [0, 1], the similarity behind ILD and the diversity penalty.

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


def case_ild(recs: np.ndarray, sim: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """ILD@k of every list: mean pairwise dissimilarity 1 - sim(i, j) over its k(k-1)/2 pairs
    (Kaminskas & Bridge 2016, eq. for ILD; Ziegler et al. 2005). recs (..., C, k); sim (I + 1, I + 1)
    from `item_similarity`, or the group similarity of `similarity_groups` with its `groups` -> (..., C)."""
    if groups is not None:
        recs = groups[recs]
    lead, (n_cases, k) = recs.shape[:-2], recs.shape[-2:]
    lists = np.ascontiguousarray(recs.reshape(-1, n_cases, k), dtype=np.int64)
    summed = _pair_similarity_sums(lists, np.ascontiguousarray(sim, dtype=np.float32))  # (B, C)
    return (1.0 - summed / (k * (k - 1) // 2)).reshape(*lead, n_cases)


def intra_list_diversity(recs: np.ndarray, sim: np.ndarray, weights: np.ndarray,
                         groups: np.ndarray | None = None) -> np.ndarray:
    """ILD@k averaged over cases with `weights`: (..., C, k) -> (...)."""
    return case_ild(recs, sim, groups) @ weights


@njit(cache=True, nogil=True)
def _pair_similarity_sums(lists, sim):  # pragma: no cover - compiled
    """Sum of sim over every unordered pair of each list: (B, C, k) -> (B, C) float64."""
    n_policies, n_cases, k = lists.shape
    out = np.zeros((n_policies, n_cases))
    for b in range(n_policies):
        for c in range(n_cases):
            row = lists[b, c]
            total = 0.0
            for i in range(k - 1):
                sims = sim[row[i]]
                for j in range(i + 1, k):
                    total += sims[row[j]]
            out[b, c] = total
    return out


def _list_counts(recs: np.ndarray, n_items: int) -> np.ndarray:
    """How many users' lists hold each item, per policy: (..., U, k) -> (..., I + 1) int64."""
    lead = recs.shape[:-2]
    flat = recs.reshape(-1, recs.shape[-2] * recs.shape[-1])  # (B, U*k)
    offsets = (np.arange(len(flat)) * (n_items + 1))[:, None]  # one bincount for every policy
    counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * (n_items + 1))
    return counts.reshape(*lead, n_items + 1)


def coverage(recs: np.ndarray, n_items: int) -> np.ndarray:
    """Catalog coverage@k: share of the n_items real items that appear in at least one list
    (Ge et al. 2010, "prediction coverage"). recs: (..., C, k) with items in 1..n_items -> (...)."""
    return coverage_of_counts(_list_counts(recs, n_items), n_items)


def coverage_of_counts(counts: np.ndarray, n_items: int) -> np.ndarray:
    """Coverage from how many lists hold each item: counts (..., I + 1), column 0 padding -> (...)."""
    return (counts[..., 1:] > 0).sum(axis=-1) / n_items


def exposure_gini_of_counts(counts: np.ndarray) -> np.ndarray:
    """Gini index of item exposure over the whole catalogue, unexposed items included (0: every item
    listed equally often, 1: one item takes every slot; as in Mansoury et al., TOIS 2022):
    G = Σ_i (2i − n − 1) x_(i) / (n Σ x), x ascending. counts (..., I + 1), column 0 padding -> (...)."""
    x = np.sort(np.asarray(counts, dtype=np.float64)[..., 1:], axis=-1)
    n = x.shape[-1]
    rank_weights = 2.0 * np.arange(1, n + 1) - n - 1
    return (x @ rank_weights) / (n * np.maximum(x.sum(axis=-1), 1e-12))


def tail_share_of_counts(counts: np.ndarray, train_popularity: np.ndarray, head: float = 0.2) -> np.ndarray:
    """Share of impressions on long-tail items: outside the `head` share of the catalogue most
    popular in training (Abdollahpouri et al. 2019). counts (..., I + 1); train_popularity (I + 1,)
    the train counts or any increasing function of them (ln π) -> (...)."""
    order = np.argsort(-np.asarray(train_popularity[1:], dtype=np.float64), kind="stable")
    tail = np.ones(len(order), dtype=bool)
    tail[order[:round(head * len(order))]] = False
    x = np.asarray(counts, dtype=np.float64)[..., 1:]
    return (x * tail).sum(axis=-1) / np.maximum(x.sum(axis=-1), 1e-12)


def personalization(recs: np.ndarray, n_items: int) -> np.ndarray:
    """1 - mean overlap |L_a ∩ L_b| / k over all pairs of lists a < b (Zhou et al., PNAS 2010,
    "personalization"; a list per held-out basket, what the service answers at that moment).

    Exact in O(C k): a pair shares item i iff both lists hold it, so the summed overlap over pairs
    is sum_i C(n_i, 2), with n_i the number of lists holding i (items are unique within a list).
    recs: (..., C, k) -> (...); needs C >= 2.
    """
    n_lists, k = recs.shape[-2:]
    if n_lists < 2:
        raise ValueError("personalization needs at least 2 lists")
    return personalization_of_counts(_list_counts(recs, n_items).astype(np.float64), n_lists, k)


def personalization_of_counts(counts: np.ndarray, n_lists, k: int) -> np.ndarray:
    """Personalization from how many of the n_lists lists hold each item: counts (..., I + 1),
    n_lists scalar or (...,) -> (...)."""
    shared = (counts * (counts - 1) / 2).sum(axis=-1)  # (...,) summed overlaps over all pairs
    return 1.0 - shared / (n_lists * (n_lists - 1) / 2 * k)


LIST_METRICS = ("ndcg", "ild", "novelty", "coverage", "personalization")


def list_metrics(positions: np.ndarray, candidates: np.ndarray, target_indptr: np.ndarray, targets: np.ndarray,
                 weights: np.ndarray, info: np.ndarray, sim: np.ndarray, groups: np.ndarray, n_items: int) -> np.ndarray:
    """`list_ndcg`, `intra_list_diversity`, `novelty`, `coverage` and `personalization` of many
    policies' lists in one compiled pass, the search's inner loop (the functions above are the
    definitions; a test holds this equal to them).

    positions (B, C, k) indices into each case's row of candidates (C, N); target_indptr (C + 1,),
    targets (T,); weights (C,) from `case_weights`; info (I + 1,) bits; sim and groups from
    `similarity_groups` -> (B, 5) float64 in LIST_METRICS order.
    """
    positions = np.ascontiguousarray(positions, dtype=np.int32)
    return _list_metrics(positions, np.ascontiguousarray(candidates, dtype=np.int32),
                         np.asarray(target_indptr, dtype=np.int64), np.asarray(targets, dtype=np.int64),
                         np.asarray(weights, dtype=np.float64), np.asarray(info, dtype=np.float64),
                         np.ascontiguousarray(sim, dtype=np.float32), np.asarray(groups, dtype=np.int64), n_items)


@njit(cache=True, nogil=True)
def _list_metrics(positions, candidates, target_indptr, targets, weights, info, sim, groups,
                  n_items):  # pragma: no cover - compiled
    n_policies, n_cases, k = positions.shape
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(gains)
    out = np.empty((n_policies, 5))
    counts = np.zeros(n_items + 1, np.int64)
    items = np.empty(k, np.int64)
    for b in range(n_policies):
        counts[:] = 0
        ndcg = dissimilarity = bits = 0.0
        for c in range(n_cases):
            dcg = pair_sim = list_bits = 0.0
            first, last = target_indptr[c], target_indptr[c + 1]
            for t in range(k):
                item = candidates[c, positions[b, c, t]]
                items[t] = item
                counts[item] += 1
                list_bits += info[item]
                for r in range(first, last):
                    if targets[r] == item:
                        dcg += gains[t]
                        break
            for i in range(k - 1):
                row = sim[groups[items[i]]]
                for j in range(i + 1, k):
                    pair_sim += row[groups[items[j]]]
            ndcg += weights[c] * dcg / ideal[min(last - first, k) - 1]
            dissimilarity += weights[c] * (1.0 - pair_sim / (k * (k - 1) // 2))
            bits += weights[c] * list_bits / k
        covered = shared = 0
        for item in range(1, n_items + 1):
            covered += counts[item] > 0
            shared += counts[item] * (counts[item] - 1) // 2
        out[b, 0] = ndcg
        out[b, 1] = dissimilarity
        out[b, 2] = bits
        out[b, 3] = covered / n_items
        out[b, 4] = 1.0 - shared / (n_cases * (n_cases - 1) / 2 * k)
    return out


def serving_cost(pool: np.ndarray, intercept_ms: float, per_candidate_ms: float) -> np.ndarray:
    """Modelled latency (ms) of re-ranking one request at pool size `pool`: a + b * pool.

    a and b are fitted once by least squares on measured single-request latencies of
    `policy.rerank` (benchmarks/bench_search.py --fit-latency) and kept in params.yaml, so the
    objective is deterministic and the search never times anything.
    """
    return intercept_ms + per_candidate_ms * np.asarray(pool, dtype=np.float64)
