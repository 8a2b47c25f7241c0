"""The bars the transformer must clear: most-popular and EASE, ranked like the model (full ranking).

Both are fit on the history before the window they are scored on (train for valid, train + valid for
test): everything known before the held-out item, which is the strongest fair version of each.
EASE's only hyper-parameter, the L2 strength λ, is chosen on valid NDCG@k; test is never looked at.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from recmoo_dag.evaluate import Scorer, evaluate, full_ranking_ranks
from recmoo_dag.features import Features
from recmoo_dag.metrics import ndcg_at_k
from recmoo_dag.results import Evaluation


def history_matrix(indptr: np.ndarray, items: np.ndarray, n_items: int) -> sparse.csr_array:
    """Binary user-item matrix X of the histories: (U, I + 1) float32, column 0 (padding) empty.

    Sparse: 100k users x 5k items is 4 GB dense and ~0.1% full.
    """
    n_users = len(indptr) - 1
    rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))  # (n,) user of every event
    cells = np.unique(rows * (n_items + 1) + np.asarray(items, dtype=np.int64))  # repeats of an item count once
    return sparse.csr_array((np.ones(len(cells), dtype=np.float32), (cells // (n_items + 1), cells % (n_items + 1))),
                            shape=(n_users, n_items + 1))


def popularity_scorer(indptr: np.ndarray, items: np.ndarray, n_items: int) -> Scorer:
    """Every user gets the same scores: how often each item occurs in the histories."""
    counts = np.bincount(items, minlength=n_items + 1).astype(np.float32)  # (I + 1,)
    return lambda users: np.broadcast_to(counts, (len(users), n_items + 1))


def ease_weights(x: sparse.csr_array | np.ndarray, lam: float) -> np.ndarray:
    """EASE item-item weights (Steck 2019, "Embarrassingly Shallow Autoencoders", eq. 8):

        P = (X^T X + λ I)^-1,   B = I - P diag(1 / diag(P)),   so diag(B) = 0.

    x: (U, I + 1) -> (I + 1, I + 1) float32.
    """
    gram = x.T @ x
    gram = (gram.toarray() if sparse.issparse(gram) else np.asarray(gram)).astype(np.float64)  # (I + 1, I + 1)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)  # (I + 1, I + 1)
    b = -p / np.diag(p)[None, :]  # (I + 1, I + 1) column j divided by P_jj
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


def ease_scorer(x: sparse.csr_array, weights: np.ndarray) -> Scorer:
    """Scores X_u B for a batch of users."""
    return lambda users: np.asarray(x[users] @ weights, dtype=np.float32)  # (B, I + 1)


def fit_ease(indptr: np.ndarray, items: np.ndarray, n_items: int, lam: float) -> np.ndarray:
    """EASE's weights fit on these histories: (I + 1, I + 1) float32."""
    return ease_weights(history_matrix(indptr, items, n_items), lam)


def tune_ease(features: Features, lambdas: Sequence[float], batch_size: int, k: int) -> tuple[float, dict[float, float]]:
    """λ with the best valid NDCG@k (ties: the smaller λ), and the valid NDCG@k of every λ tried."""
    indptr, items = features.history_before("valid")
    x = history_matrix(indptr, items, features.n_items)
    tried = {}
    for lam in sorted(lambdas):
        ranks = full_ranking_ranks(ease_scorer(x, ease_weights(x, lam)), indptr, items,
                                   features.valid_targets, features.n_items, batch_size)
        tried[float(lam)] = ndcg_at_k(ranks, k)
    best = max(tried, key=lambda lam: (tried[lam], -lam))
    return best, tried


def evaluate_baselines(features: Features, lambdas: Sequence[float], batch_size: int,
                       k: int) -> tuple[Evaluation, Evaluation, float, dict[float, float]]:
    """Popularity and EASE on both windows, EASE's λ (chosen on valid) and its valid NDCG@k per λ tried."""
    n_items = features.n_items
    lam, tried = tune_ease(features, lambdas, batch_size, k)

    def make_ease(indptr: np.ndarray, items: np.ndarray) -> Scorer:
        x = history_matrix(indptr, items, n_items)
        return ease_scorer(x, ease_weights(x, lam))

    pop = evaluate(lambda indptr, items: popularity_scorer(indptr, items, n_items), features, batch_size, k)
    return pop, evaluate(make_ease, features, batch_size, k), lam, tried
