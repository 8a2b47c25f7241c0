"""A tiny project with features and model-like candidates, for the search, stage and notebook tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recmoo_dag.exposure import window_prices
from recmoo_dag.features import build_features, load_features, write_features
from recmoo_dag.io import write_json
from recmoo_dag.synth import synthesize
from tests.conftest import section

N_CANDIDATES = 40
SMALL = {"policy": {"k": 5},
         "search": {"n_evals": 240, "pop_size": 24, "mmr_pool": 20, "threads": 1}}


def stand_in_candidates(features, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Popularity + genre taste + noise, seen items excluded, best first, one row per held-out
    basket: the contract of candidates.npz."""
    from recmoo_dag.candidates import best_of

    rng = np.random.default_rng(seed)
    genres = features.categories.astype(float)  # (I + 1, C)
    out = {}
    for window in ("valid", "test"):
        cases = features.cases(window)
        row, position = cases.history.positions(np.arange(cases.n_cases))
        items = cases.history.items[position]
        taste = np.zeros((cases.n_cases, genres.shape[1]))
        np.add.at(taste, row, genres[items])
        scores = np.log1p(features.train_counts)[None] + taste @ genres.T / np.maximum(cases.history.lengths, 1)[:, None]
        scores = scores + rng.normal(0, 0.5, scores.shape)
        scores[:, 0] = -np.inf
        scores[row, items] = -np.inf
        out[f"{window}_items"], out[f"{window}_scores"] = best_of(scores, n)
        out[f"{window}_users"] = cases.users
        out[f"{window}_target_indptr"] = cases.target_indptr
        out[f"{window}_targets"] = cases.targets
    return out


def make_pareto_project(root: Path, seed: int = 0) -> None:
    """data/features, data/candidates/candidates.npz and data/exposure/prices.json under `root` (the
    default params paths), as the stages write them for SMALL's k."""
    interactions, items = synthesize(n_users=80, n_items=70, n_events=3000, n_categories=5, seed=seed)
    tables = build_features(interactions, items, section("features", min_user_interactions=5, min_item_interactions=3))
    write_features(tables, root / "data" / "features")
    features = load_features(root / "data" / "features")
    (root / "data" / "candidates").mkdir(parents=True, exist_ok=True)
    candidates = stand_in_candidates(features, N_CANDIDATES, seed)
    np.savez(root / "data" / "candidates" / "candidates.npz", **candidates)
    prices = window_prices(candidates, features.n_items, SMALL["policy"]["k"],
                            cap_slack=2.0, floor=3, iterations=100, seed=seed)
    write_json(root / "data" / "exposure" / "prices.json", {window: p.to_json() for window, p in prices.items()})
