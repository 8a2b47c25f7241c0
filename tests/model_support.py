"""Helpers for the model tests: a tiny synthetic project with features built (and the tuning stage's
file, with tuning off), and tiny model params."""
from __future__ import annotations

import copy
from pathlib import Path

from recmoo_dag.config import Params, load_params
from recmoo_dag.features import build_features, write_features
from recmoo_dag.synth import synthesize
from tests.conftest import deep_update, write_params

# A model that trains in well under a second per epoch on 2 cores, on ~100 users x ~80 items.
TINY_MODEL = {
    "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.1, "max_len": 20},
    "train": {"max_steps": 40, "eval_every_steps": 10, "warmup_steps": 5, "patience": 4, "batch_size": 32,
              "lr": 0.005, "ease_lambdas": [10.0, 100.0],
              "eval_batch_size": 64, "threads": 1},  # tiny ops: a second thread only adds sync cost
    "candidates": {"n": 30},
    "tune": {"enabled": False},  # the tests that tune say so (tests/test_tune.py)
}


def tiny_project(directory: Path, overrides: dict | None = None, seed: int = 7) -> Params:
    """params.yaml and data/features in `directory` (paths in params are relative: run from there)."""
    params_path = write_params(directory, deep_update(copy.deepcopy(TINY_MODEL), overrides or {}))
    params = load_params(params_path)
    interactions, items = synthesize(n_users=120, n_items=80, n_events=4000, n_categories=6, seed=seed)
    write_features(build_features(interactions, items, params.features), directory / params.features.dir)
    if not params.tune.enabled:  # train reads models/tuned.json: here, the params as written
        from recmoo_dag.stages import tune

        tune.main(params.model_copy(update={"tune": params.tune.model_copy(update={
            "chosen": str(directory / params.tune.chosen), "metrics": str(directory / params.tune.metrics),
            "report_dir": str(directory / params.tune.report_dir)})}))
    return params
