"""`recmoo candidates`: every held-out basket's top candidates.n unseen items by the chosen generator's
scores, in the valid and test windows."""
from __future__ import annotations

import time

from recmoo_dag.candidates import build_candidates, save_candidates
from recmoo_dag.config import Params
from recmoo_dag.evaluate import WINDOWS
from recmoo_dag.features import load_features
from recmoo_dag.generator import load_generator
from recmoo_dag.model import check_catalog


def main(params: Params) -> None:
    start = time.perf_counter()
    generator = load_generator(params.train.model_dir)
    features = load_features(params.features.dir)
    check_catalog(generator.model, features.n_items, params.train.model_dir, params.features.dir)
    arrays = build_candidates(generator.scorer, features, params.candidates.n, params.candidates.batch_size)
    save_candidates(params.candidates.path, arrays)
    cases = {window: len(arrays[f"{window}_users"]) for window in WINDOWS}
    print(f"candidates: top {params.candidates.n} of {features.n_items} items by {generator.kind} for "
          + ", ".join(f"{n} {window}" for window, n in cases.items())
          + f" baskets in {time.perf_counter() - start:.2f}s -> {params.candidates.path}")
