"""Every held-out basket's N best unseen items by the generator's scores, in two windows: what the
candidates stage writes.

"valid" ranks each valid basket from its history (the re-ranking search tunes policies against the
valid baskets); "test" each test basket from its own (the held-out report). Seen items never appear.
Scores are the generator's (recmoo_dag/generator.py): the transformer's logits, i.e. log p(item |
history) up to a per-case constant, EASE's, or the blend's z-scores; the re-ranker's temperature
and popularity terms operate on them.

On disk: one `np.savez` archive of plain arrays (no pickle), per window w (rows: the cases of
`Features.cases(w)`, in that order):
  w_items (C, N) int32 item index, best first (ties: lower index first); w_scores (C, N) float32
  w_users (C,) int64 the user of each case; w_target_indptr (C + 1,), w_targets (T,): its relevant items
A case with fewer than N unseen items gets trailing item 0 (padding) with score -inf.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import WINDOWS, Scorer, masked_scores
from recmoo_dag.features import PADDING_ITEM, Features
from recmoo_dag.io import atomic_write
from recmoo_dag.windows import Histories

KEYS = tuple(f"{window}_{part}" for window in WINDOWS for part in ("items", "scores", "users", "target_indptr", "targets"))


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


def top_n(scorer: Scorer, history: Histories, n_items: int, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The n best unseen items after every row of `history`: -> items (R, n) int32, scores (R, n) float32."""
    rows_total = history.n_rows
    # Columns past the catalog size stay padding: the shape is (R, n) whatever the catalog.
    out_items = np.full((rows_total, n), PADDING_ITEM, dtype=np.int32)
    out_scores = np.full((rows_total, n), -np.inf, dtype=np.float32)
    width = min(n, n_items)
    for start in range(0, rows_total, batch_size):
        rows = np.arange(start, min(start + batch_size, rows_total))
        out_items[rows, :width], out_scores[rows, :width] = best_of(
            masked_scores(scorer, history, rows, n_items), width)  # seen = -inf
    return out_items, out_scores


def build_candidates(scorer_for: Callable[[Histories, Histories], Scorer], features: Features, n: int,
                     batch_size: int) -> dict[str, np.ndarray]:
    """All arrays of candidates.npz; scorer_for(fit, history) scores the cases' histories, fit on the
    events before the window."""
    arrays = {}
    for window in WINDOWS:
        cases = features.cases(window)
        scorer = scorer_for(features.history_before(window), cases.history)
        arrays[f"{window}_items"], arrays[f"{window}_scores"] = top_n(scorer, cases.history, features.n_items, n,
                                                                      batch_size)
        arrays[f"{window}_users"] = cases.users
        arrays[f"{window}_target_indptr"] = cases.target_indptr
        arrays[f"{window}_targets"] = cases.targets
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
