"""`recmoo exposure`: the capacity prices and floor subsidies that spread the lists over the
catalogue, solved across every valid case's candidates (recmoo_dag/exposure.py); what each does to
the accuracy-only lists on valid, at weight 1."""
from __future__ import annotations

import time

import numpy as np

from recmoo_dag.candidates import load_candidates
from recmoo_dag.config import Params
from recmoo_dag.exposure import solve_exposure, top_k_counts
from recmoo_dag.features import load_features
from recmoo_dag.io import write_json
from recmoo_dag.metrics import exposure_gini_of_counts, tail_share_of_counts
from recmoo_dag.objectives import label


def main(params: Params) -> None:
    start, cfg, k = time.perf_counter(), params.exposure, params.policy.k
    features = load_features(params.features.dir)
    candidates = load_candidates(params.candidates.path)
    items, scores = candidates["valid_items"], candidates["valid_scores"]
    prices = solve_exposure(scores, items, features.n_items, k, cfg.cap_slack, cfg.floor, cfg.iterations, params.seed)
    write_json(cfg.prices, prices.to_json())

    def lists(price: np.ndarray) -> dict:
        counts, _ = top_k_counts(np.where(items == 0, -np.inf, scores), items, price, k)
        return {label("coverage", k): float((counts[1:] > 0).mean()),
                label("exposure_gini", k): float(exposure_gini_of_counts(counts)),
                label("tail_share", k): float(tail_share_of_counts(counts, features.train_counts))}

    figures = {"accuracy_only": lists(np.zeros(features.n_items + 1)), "cap": lists(prices.cap),
               "floor": lists(prices.floor)}
    seconds = time.perf_counter() - start
    write_json(cfg.metrics, {**prices.settings, "solves": prices.solves, "valid_at_weight_1": figures,
                             "cases": len(items), "seconds": round(seconds, 2)})
    cover = label("coverage", k)
    print(f"exposure: prices for {features.n_items} items from {len(items)} valid cases in {seconds:.1f}s; "
          f"{cover} on valid {figures['accuracy_only'][cover]:.3f} accuracy-only, {figures['cap'][cover]:.3f} "
          f"capacity prices, {figures['floor'][cover]:.3f} floor subsidies -> {cfg.prices}")
