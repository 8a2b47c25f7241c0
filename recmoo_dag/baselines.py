"""The bars the transformer must clear: most-popular and EASE, ranked like the model (full ranking).

Both are fit on the events before the window they are scored on (train for valid, train + valid for
test): everything known then, which is the strongest fair version of each; each case is then
scored from its own history. EASE's only hyper-parameter, the L2 strength λ, is chosen on valid
NDCG@k; test is never looked at.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from recmoo_dag.config import EvaluationParams
from recmoo_dag.evaluate import Scorer, accuracy, evaluate
from recmoo_dag.features import Features
from recmoo_dag.results import Evaluation
from recmoo_dag.windows import Histories


def history_matrix(history: Histories, n_items: int) -> sparse.csr_array:
    """Binary row-item matrix X of the histories: (R, I + 1) float32, column 0 (padding) empty.

    Sparse: 100k users x 5k items is 4 GB dense and ~0.1% full.
    """
    row, position = history.positions(np.arange(history.n_rows))
    cells = np.unique(row * (n_items + 1) + history.items[position].astype(np.int64))  # repeats count once
    return sparse.csr_array((np.ones(len(cells), dtype=np.float32), (cells // (n_items + 1), cells % (n_items + 1))),
                            shape=(history.n_rows, n_items + 1))


def popularity_scorer(fit: Histories, n_items: int) -> Scorer:
    """Every row gets the same scores: how often each item occurs in the histories fit on."""
    _, position = fit.positions(np.arange(fit.n_rows))
    counts = np.bincount(fit.items[position], minlength=n_items + 1).astype(np.float32)  # (I + 1,)
    return lambda rows: np.broadcast_to(counts, (len(rows), n_items + 1))


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


def ease_scorer(history: Histories, weights: np.ndarray, n_items: int) -> Scorer:
    """Scores X_r B for a batch of rows of `history`."""
    x = history_matrix(history, n_items)
    return lambda rows: np.asarray(x[rows] @ weights, dtype=np.float32)  # (B, I + 1)


def fit_ease(fit: Histories, n_items: int, lam: float) -> np.ndarray:
    """EASE's weights fit on these histories: (I + 1, I + 1) float32."""
    return ease_weights(history_matrix(fit, n_items), lam)


def tune_ease(features: Features, lambdas: Sequence[float], batch_size: int, k: int,
              evaluation: EvaluationParams, seed: int) -> tuple[float, dict[float, float]]:
    """λ with the best valid NDCG@k (ties: the smaller λ), and the valid NDCG@k of every λ tried."""
    cases, x = features.cases("valid"), history_matrix(features.history_before("valid"), features.n_items)
    tried = {}
    for lam in sorted(lambdas):
        scorer = ease_scorer(cases.history, ease_weights(x, lam), features.n_items)
        tried[float(lam)] = accuracy(scorer, cases, features.n_items, batch_size, k, evaluation, seed).ndcg
    best = max(tried, key=lambda lam: (tried[lam], -lam))
    return best, tried


def evaluate_baselines(features: Features, lambdas: Sequence[float], batch_size: int, k: int,
                       evaluation: EvaluationParams, seed: int) -> tuple[Evaluation, Evaluation, float, dict[float, float]]:
    """Popularity and EASE on both windows, EASE's λ (chosen on valid) and its valid NDCG@k per λ tried."""
    n_items = features.n_items
    lam, tried = tune_ease(features, lambdas, batch_size, k, evaluation, seed)
    pop = evaluate(lambda fit, history: popularity_scorer(fit, n_items), features, batch_size, k, evaluation, seed)
    ease = evaluate(lambda fit, history: ease_scorer(history, fit_ease(fit, n_items, lam), n_items), features,
                    batch_size, k, evaluation, seed)
    return pop, ease, lam, tried
