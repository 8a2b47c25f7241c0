"""`recmoo candidates`: every user's top candidates.n unseen items by model score, valid and test contexts."""
from __future__ import annotations

import time

from recmoo_dag.candidates import build_candidates, save_candidates
from recmoo_dag.config import Params
from recmoo_dag.evaluate import CONTEXTS, model_scorer
from recmoo_dag.features import load_features
from recmoo_dag.model import check_catalog, load_model


def main(params: Params) -> None:
    start = time.perf_counter()
    model = load_model(params.train.model_dir)
    features = load_features(params.features.dir)
    check_catalog(model, features.n_items, params.train.model_dir, params.features.dir)
    arrays = build_candidates(lambda indptr, items: model_scorer(model, indptr, items), features,
                              params.candidates.n, params.candidates.batch_size)
    save_candidates(params.candidates.path, arrays)
    print(f"candidates: top {params.candidates.n} of {features.n_items} items for {features.n_users} users "
          f"x {len(CONTEXTS)} contexts in {time.perf_counter() - start:.2f}s -> {params.candidates.path}")
