"""`recmoo exposure`: the capacity prices and floor subsidies that spread the lists over the
catalogue, one set per held-out window, each solved across the lists ranked when that window opens
(recmoo_dag/exposure.py, `opening_cases`); what each does to those lists at weight 1."""
from __future__ import annotations

import time

import numpy as np

from recmoo_dag.candidates import load_candidates
from recmoo_dag.config import Params
from recmoo_dag.exposure import WINDOW_NAMES, opening_lists, top_k_counts, window_prices
from recmoo_dag.features import load_features
from recmoo_dag.io import write_json
from recmoo_dag.metrics import exposure_gini_of_counts, tail_share_of_counts
from recmoo_dag.objectives import label


def figures(items: np.ndarray, scores: np.ndarray, price: np.ndarray, k: int, train_counts: np.ndarray) -> dict:
    """Coverage, exposure Gini and tail share of every list's top k of scores − price."""
    counts, _ = top_k_counts(np.where(items == 0, -np.inf, scores), items, price, k)
    return {label("coverage", k): float((counts[1:] > 0).mean()),
            label("exposure_gini", k): float(exposure_gini_of_counts(counts)),
            label("tail_share", k): float(tail_share_of_counts(counts, train_counts))}


def main(params: Params) -> None:
    start, cfg, k = time.perf_counter(), params.exposure, params.policy.k
    features = load_features(params.features.dir)
    candidates = load_candidates(params.candidates.path)
    solved = window_prices(candidates, features.n_items, k, cfg.cap_slack, cfg.floor, cfg.iterations, params.seed)
    report = {}
    for window, prices in solved.items():
        items, scores = opening_lists(candidates, window)
        at_weight_1 = {name: figures(items, scores, price, k, features.train_counts) for name, price in (
            ("accuracy_only", np.zeros(features.n_items + 1)), ("cap", prices.cap), ("floor", prices.floor))}
        report[window] = {"lists": len(items), "solves": prices.solves, "at_weight_1": at_weight_1}
    write_json(cfg.prices, {window: prices.to_json() for window, prices in solved.items()})
    seconds = time.perf_counter() - start
    write_json(cfg.metrics, {**solved["valid"].settings, **report, "seconds": round(seconds, 2)})
    cover = label("coverage", k)
    shown = "; ".join(f"{window} from {report[window]['lists']} opening lists, {cover} "
                      f"{report[window]['at_weight_1']['accuracy_only'][cover]:.3f} accuracy-only, "
                      f"{report[window]['at_weight_1']['cap'][cover]:.3f} capacity prices, "
                      f"{report[window]['at_weight_1']['floor'][cover]:.3f} floor subsidies" for window in WINDOW_NAMES)
    print(f"exposure: prices for {features.n_items} items in {seconds:.1f}s; {shown} -> {cfg.prices}")
