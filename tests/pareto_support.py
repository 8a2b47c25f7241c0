"""A tiny project with features and model-like candidates, for the search, stage and notebook tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recmoo_dag.features import build_features, load_features, write_features
from recmoo_dag.synth import synthesize
from tests.conftest import section

N_CANDIDATES = 40
SMALL = {"policy": {"k": 5},
         "search": {"n_evals": 240, "pop_size": 24, "mmr_pool": 20, "threads": 1}}


def stand_in_candidates(features, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Popularity + genre taste + noise, seen items excluded, best first: the contract of candidates.npz."""
    rng = np.random.default_rng(seed)
    genres = features.categories.astype(float)  # (I + 1, C)
    out = {}
    for window, targets in (("valid", features.valid_targets), ("test", features.test_targets)):
        indptr, items = features.history_before(window)
        users = np.repeat(np.arange(features.n_users), np.diff(indptr))
        taste = np.zeros((features.n_users, genres.shape[1]))
        np.add.at(taste, users, genres[items])
        scores = np.log1p(features.train_counts)[None] + taste @ genres.T / np.maximum(np.diff(indptr), 1)[:, None]
        scores = scores + rng.normal(0, 0.5, scores.shape)
        scores[:, 0] = -np.inf
        scores[users, items] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        out[f"{window}_items"] = order.astype(np.int32)
        out[f"{window}_scores"] = np.take_along_axis(scores, order, 1).astype(np.float32)
        out[f"{window}_targets"] = targets.astype(np.int32)
    return out


def make_pareto_project(root: Path, seed: int = 0) -> None:
    """data/features and data/candidates/candidates.npz under `root` (the default params paths)."""
    interactions, items = synthesize(n_users=80, n_items=70, n_events=3000, n_categories=5, seed=seed)
    tables = build_features(interactions, items, section("features", min_user_interactions=5, min_item_interactions=3))
    write_features(tables, root / "data" / "features")
    features = load_features(root / "data" / "features")
    (root / "data" / "candidates").mkdir(parents=True, exist_ok=True)
    np.savez(root / "data" / "candidates" / "candidates.npz", **stand_in_candidates(features, N_CANDIDATES, seed))
