"""Full-ranking evaluation of any scorer: every held-out basket of a window (a case), in batches.

A scorer maps a batch of rows of a `Histories` (B,) to scores of every item (B, I + 1). Training (every
round), the baselines, the final report and the candidates stage all go through the helpers here,
so they rank the same catalog with the same exclusions: the padding item and everything in the
row's history (what its user did before the basket) never get recommended. A generator is fit on
the events before the window (`Features.history_before`) and scores each case from its own history.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from recmoo_dag.config import EvaluationParams
from recmoo_dag.features import PADDING_ITEM, Features
from recmoo_dag.metrics import basket_accuracy, target_ranks
from recmoo_dag.results import MEASURES, Accuracy, Evaluation
from recmoo_dag.uncertainty import Bootstrap, per_user
from recmoo_dag.windows import Cases, Histories

Scorer = Callable[[np.ndarray], np.ndarray]  # rows (B,) -> scores (B, I + 1)
WINDOWS = ("valid", "test")


def left_padded(history: Histories, rows: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's input for each row: the row's last whole baskets that fit in max_len events (a
    last basket longer than that: its last max_len events), left-padded with item 0, and each
    position's basket counted from the first kept one (-1 at padding).
    rows (B,) -> items (B, max_len) int64, baskets (B, max_len) int64."""
    starts, ends = history.starts[rows], history.ends[rows]  # (B,)
    start = np.maximum(starts, ends - max_len)  # (B,) the window's first event
    inside = (start > starts) & (history.basket_starts[np.minimum(start, len(history.items) - 1)] != start)
    cut = np.where(inside, history.basket_ends[np.minimum(start, len(history.items) - 1)], start)  # whole baskets
    start = np.where(inside & (cut < ends), cut, start)
    positions = ends[:, None] - max_len + np.arange(max_len)  # (B, L) absolute event positions
    real = positions >= start[:, None]  # (B, L)
    clipped = np.maximum(positions, 0)
    opens = real & ((positions == start[:, None]) | (history.basket_starts[clipped] == clipped))  # (B, L)
    items = np.where(real, history.items[clipped], PADDING_ITEM).astype(np.int64)
    return items, np.cumsum(opens, axis=1) - 1


def seen_mask(history: Histories, rows: np.ndarray, n_items: int) -> np.ndarray:
    """True for each row's history items and for the padding item: (B,) -> (B, I + 1) bool."""
    row, position = history.positions(rows)
    mask = np.zeros((len(rows), n_items + 1), dtype=bool)
    mask[row, history.items[position]] = True
    mask[:, PADDING_ITEM] = True
    return mask


def masked_scores(scorer: Scorer, history: Histories, rows: np.ndarray, n_items: int) -> np.ndarray:
    """Scores with seen items and padding at -inf: (B,) -> (B, I + 1) float32."""
    scores = np.asarray(scorer(rows), dtype=np.float32)  # (B, I + 1)
    return np.where(seen_mask(history, rows, n_items), np.float32(-np.inf), scores)


def batches(n: int, batch_size: int) -> list[np.ndarray]:
    return np.array_split(np.arange(n), max(1, -(-n // batch_size)))


def case_ranks(scorer: Scorer, cases: Cases, n_items: int, batch_size: int) -> np.ndarray:
    """0-based rank of every relevant item of every case among the case's unseen items: -> (T,) int64."""
    ranks = []
    for rows in batches(cases.n_cases, batch_size):
        sub = cases.subset(rows)
        scores = masked_scores(scorer, cases.history, rows, n_items)  # (B, I + 1)
        ranks.append(target_ranks(scores, sub.target_rows, sub.targets))
    return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)


def summarize(per_case: dict[str, np.ndarray], cases: Cases, k: int, evaluation: EvaluationParams,
              seed: int) -> Accuracy:
    """Accuracy of per-case measures (metrics.basket_accuracy): each user's mean over their cases, the
    mean over users and its interval (a seeded bootstrap over this window's users)."""
    users, compact = np.unique(cases.users, return_inverse=True)
    boot = Bootstrap(len(users), evaluation.replicates, seed)
    means = {name: per_user(per_case["rr" if name == "mrr" else name], compact.ravel(), len(users)) for name in MEASURES}
    return Accuracy(k, {name: float(values.mean()) for name, values in means.items()},
                    {name: tuple(float(v) for v in boot.interval(values, evaluation.level)) for name, values in means.items()},
                    float(per_case["ndcg"].mean()), len(users), cases.n_cases, means["ndcg"])


def accuracy(scorer: Scorer, cases: Cases, n_items: int, batch_size: int, k: int, evaluation: EvaluationParams,
             seed: int) -> Accuracy:
    """A scorer's accuracy on one window's cases."""
    ranks = case_ranks(scorer, cases, n_items, batch_size)
    return summarize(basket_accuracy(ranks, cases.target_indptr, k), cases, k, evaluation, seed)


def evaluate(make_scorer: Callable[[Histories, Histories], Scorer], features: Features, batch_size: int, k: int,
             evaluation: EvaluationParams, seed: int) -> Evaluation:
    """A scorer's accuracy on both windows; make_scorer(fit, history) gets the events before the
    window (what a model of that moment may be fit on) and the cases' histories it scores."""
    report = {}
    for window in WINDOWS:
        cases = features.cases(window)
        scorer = make_scorer(features.history_before(window), cases.history)
        report[window] = accuracy(scorer, cases, features.n_items, batch_size, k, evaluation, seed)
    return Evaluation(**report)


def model_scorer(model: torch.nn.Module, history: Histories, chunk: int = 128) -> Scorer:
    """Scorer of a SeqRecModel (on CPU, eval mode) that reads each row's last baskets (left_padded).

    Rows go through the model in chunks of similar history length, each trimmed to its longest row:
    most histories are far shorter than max_len, and attention costs grow with the padded width.
    """
    def score(rows: np.ndarray) -> np.ndarray:
        seq, baskets = left_padded(history, rows, model.max_len)  # (B, L) each
        lengths = (baskets >= 0).sum(axis=1)  # (B,)
        out = np.empty((len(rows), model.n_items + 1), dtype=np.float32)  # (B, I + 1)
        by_length = np.argsort(-lengths, kind="stable")
        for part in np.split(by_length, np.arange(chunk, len(rows), chunk)):
            width = max(1, lengths[part].max())
            out[part] = model.score_next(torch.from_numpy(seq[part, -width:]),
                                         torch.from_numpy(baskets[part, -width:])).numpy()  # (b, I + 1)
        return out

    return score
