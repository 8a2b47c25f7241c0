"""Full-ranking evaluation of any scorer over all users, in batches of users.

A scorer maps a batch of user indices (B,) to scores of every item (B, I + 1). Training (every
epoch), the baselines, the final report and the candidates stage all go through the helpers here,
so they rank the same catalog with the same exclusions: the padding item and everything in the
user's history of that window ("valid": train; "test": train + valid) never get recommended.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from recmoo_dag.features import PADDING_ITEM, Features
from recmoo_dag.metrics import accuracy, rank_of_targets
from recmoo_dag.results import Evaluation

Scorer = Callable[[np.ndarray], np.ndarray]  # users (B,) -> scores (B, I + 1)
WINDOWS = ("valid", "test")


def targets_of(features: Features, window: str) -> np.ndarray:
    """(U,) the held-out item of every user in `window`."""
    return {"valid": features.valid_targets, "test": features.test_targets}[window]


def left_padded(indptr: np.ndarray, items: np.ndarray, users: np.ndarray, max_len: int) -> np.ndarray:
    """The last `max_len` items of each user's sequence, left-padded with 0: (B,) -> (B, max_len) int64."""
    starts, ends = indptr[users], indptr[users + 1]  # (B,)
    positions = ends[:, None] - max_len + np.arange(max_len)  # (B, L) absolute event positions
    real = positions >= starts[:, None]  # (B, L) False where the user has no event that far back
    return np.where(real, items[np.maximum(positions, 0)], PADDING_ITEM).astype(np.int64)


def seen_mask(indptr: np.ndarray, items: np.ndarray, users: np.ndarray, n_items: int) -> np.ndarray:
    """True for each user's history items and for the padding item: (B,) -> (B, I + 1) bool."""
    starts, lengths = indptr[users], indptr[users + 1] - indptr[users]  # (B,)
    rows = np.repeat(np.arange(len(users)), lengths)  # (n,) batch row of every history event
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (n,) 0.. within user
    mask = np.zeros((len(users), n_items + 1), dtype=bool)
    mask[rows, items[np.repeat(starts, lengths) + offsets]] = True
    mask[:, PADDING_ITEM] = True
    return mask


def masked_scores(scorer: Scorer, indptr: np.ndarray, items: np.ndarray, users: np.ndarray,
                  n_items: int) -> np.ndarray:
    """Scores with seen items and padding at -inf: (B,) -> (B, I + 1) float32."""
    scores = np.asarray(scorer(users), dtype=np.float32)  # (B, I + 1)
    return np.where(seen_mask(indptr, items, users, n_items), np.float32(-np.inf), scores)


def full_ranking_ranks(scorer: Scorer, indptr: np.ndarray, items: np.ndarray, targets: np.ndarray,
                       n_items: int, batch_size: int) -> np.ndarray:
    """0-based rank of every user's target among all unseen items: -> (U,) int64."""
    n_users = len(indptr) - 1
    ranks = [rank_of_targets(masked_scores(scorer, indptr, items, users, n_items), targets[users])
             for users in np.array_split(np.arange(n_users), max(1, -(-n_users // batch_size)))]
    return np.concatenate(ranks)


def evaluate(make_scorer: Callable[[np.ndarray, np.ndarray], Scorer], features: Features, batch_size: int,
             k: int) -> Evaluation:
    """A scorer's NDCG@k, HR@k and MRR on both windows; make_scorer(indptr, items) gets each window's history."""
    report = {}
    for window in WINDOWS:
        indptr, items = features.history_before(window)
        ranks = full_ranking_ranks(make_scorer(indptr, items), indptr, items, targets_of(features, window),
                                   features.n_items, batch_size)
        report[window] = accuracy(ranks, k)
    return Evaluation(**report)


def model_scorer(model: torch.nn.Module, indptr: np.ndarray, items: np.ndarray, chunk: int = 128) -> Scorer:
    """Scorer of a SeqRecModel (on CPU, eval mode) that reads each user's last max_len history items.

    Users go through the model in chunks of similar history length, each trimmed to its longest
    row: most histories are far shorter than max_len, and attention costs grow with the padded width.
    """
    def score(users: np.ndarray) -> np.ndarray:
        seq = left_padded(indptr, items, users, model.max_len)  # (B, L)
        lengths = (seq != PADDING_ITEM).sum(axis=1)  # (B,)
        out = np.empty((len(users), model.n_items + 1), dtype=np.float32)  # (B, I + 1)
        by_length = np.argsort(-lengths, kind="stable")
        for rows in np.split(by_length, np.arange(chunk, len(users), chunk)):
            width = max(1, lengths[rows].max())
            out[rows] = model.score_next(torch.from_numpy(seq[rows, -width:])).numpy()  # (b, I + 1)
        return out

    return score
