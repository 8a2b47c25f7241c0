"""Every user's N best unseen items by the generator's scores, in two windows: what the candidates stage writes.

"valid" ranks from the train history (the re-ranking search tunes policies against the valid item);
"test" ranks from train + valid (the held-out report and the service's offline view). Seen items
never appear. Scores are the generator's (recmoo_dag/generator.py): the transformer's logits, i.e.
log p(item | history) up to a per-user constant, EASE's, or the blend's z-scores; the re-ranker's
temperature and popularity terms operate on them.

On disk: one `np.savez` archive of plain arrays (no pickle):
  valid_items, test_items    (U, N) int32 item index, best first (ties: lower index first)
  valid_scores, test_scores  (U, N) float32
  valid_targets, test_targets (U,) int32 the held-out item of each window
A user with fewer than N unseen items gets trailing item 0 (padding) with score -inf.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import WINDOWS, Scorer, masked_scores, targets_of
from recmoo_dag.features import PADDING_ITEM, Features
from recmoo_dag.io import atomic_write

KEYS = tuple(f"{window}_{part}" for window in WINDOWS for part in ("items", "scores", "targets"))


def best_of(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best columns of each row, best first, ties to the lower index; -inf (seen, padding)
    columns come back as padding. scores (B, I + 1) -> items (B, n) int32, scores (B, n) float32.
    The one tie-breaking rule of candidates, deploy and the service's live sessions."""
    scores = np.asarray(scores, dtype=np.float32)
    n = min(n, scores.shape[1] - 1)
    best = np.argpartition(-scores, n - 1, axis=1)[:, :n]  # (B, n) unordered; O(I) per row, no full sort
    best_scores = np.take_along_axis(scores, best, axis=1)  # (B, n)
    order = np.lexsort((best, -best_scores), axis=1)  # (B, n) score desc, then item index asc
    best, best_scores = np.take_along_axis(best, order, 1), np.take_along_axis(best_scores, order, 1)
    return np.where(np.isneginf(best_scores), PADDING_ITEM, best).astype(np.int32), best_scores


def top_n(scorer: Scorer, indptr: np.ndarray, items: np.ndarray, n_items: int, n: int,
          batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best unseen items of every user: -> items (U, n) int32, scores (U, n) float32."""
    n_users = len(indptr) - 1
    # Columns past the catalog size stay padding: the shape is (U, n) whatever the catalog.
    out_items = np.full((n_users, n), PADDING_ITEM, dtype=np.int32)
    out_scores = np.full((n_users, n), -np.inf, dtype=np.float32)
    width = min(n, n_items)
    for start in range(0, n_users, batch_size):
        users = np.arange(start, min(start + batch_size, n_users))
        out_items[users, :width], out_scores[users, :width] = best_of(
            masked_scores(scorer, indptr, items, users, n_items), width)  # seen = -inf
    return out_items, out_scores


def build_candidates(scorer_for: Callable[[np.ndarray, np.ndarray], Scorer], features: Features, n: int,
                     batch_size: int) -> dict[str, np.ndarray]:
    """All arrays of candidates.npz; scorer_for(indptr, items) scores from a window's history."""
    arrays = {}
    for window in WINDOWS:
        indptr, items = features.history_before(window)
        arrays[f"{window}_items"], arrays[f"{window}_scores"] = top_n(
            scorer_for(indptr, items), indptr, items, features.n_items, n, batch_size)
        arrays[f"{window}_targets"] = targets_of(features, window).astype(np.int32)
    return arrays


def save_candidates(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a bare path
            np.savez(handle, **arrays)

    atomic_write(path, write)


def load_candidates(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of candidates.npz (see the module docstring), loaded without pickle."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no candidates here (run `recmoo candidates`)")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    missing = set(KEYS) - set(arrays)
    if missing:
        raise InputError(f"{path}: missing arrays {sorted(missing)}: rebuild it with `recmoo candidates`")
    return arrays
