"""A tiny project ready for `deploy`: synthetic raw log -> ingest -> features -> model -> candidates -> exposure -> front.

The stages run through their real functions (ingest, features, candidates, exposure). Two shortcuts keep it
to a few seconds: validation copies the ingested tables (the GX suite is tested in test_validation),
and the model is a small untrained SeqRecModel saved with `save_model` (deploy and serve only need
its scores; training is tested with the model).
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pandas as pd
import torch

from recmoo_dag.config import Params
from recmoo_dag.generator import save_generator
from recmoo_dag.model import SeqRecModel, save_model
from recmoo_dag.policy import VARIABLE_NAMES, accuracy_only_policy
from recmoo_dag.stages import candidates, exposure, features, ingest
from recmoo_dag.synth import write_synthetic_log
from tests.conftest import write_params

SMALL = {
    "features": {"min_user_interactions": 5, "min_item_interactions": 3},
    "model": {"d_model": 16, "n_heads": 2, "n_layers": 1, "dropout": 0.0, "max_len": 20},
    "candidates": {"n": 40, "batch_size": 64},
    # ~40 opening lists of 10 over 50 items: 8 slots per item, which the accuracy-only lists give to a
    # few: a floor of 6 binds and still fits.
    "exposure": {"floor": 6, "cap_slack": 1.5},
    "serve": {"reload_check_ms": 0},
    # Five one-genre categories: the model's own lists are already near the ILD ceiling (no policy
    # gains the default 5%), so the tiny project asks for no diversity loss instead. One split: its
    # fronts are written by hand (front.csv), not searched.
    "deploy": {"min_ratio": {"ndcg": 0.98, "ild": 1.0}, "splits": 1},
}


def front_rows(rows: list[dict]) -> pd.DataFrame:
    """A front.csv with the decision variables (other columns of the real front are not read)."""
    return pd.DataFrame([{name: float(row.get(name, 0.0)) for name in VARIABLE_NAMES} for row in rows])


# Three policies spanning accuracy-only to strongly diversified, on the pool sizes of a tiny catalog.
FRONT = [
    dict(zip(VARIABLE_NAMES, accuracy_only_policy(10))),
    {"log10_temperature": 0.0, "debias": 0.5, "novelty": 0.2, "calibration": 0.1, "dither": 0.5, "diversity": 0.3,
     "exposure_floor": 0.5, "pool": 20},
    {"log10_temperature": 0.5, "debias": 1.0, "novelty": 0.8, "calibration": 0.0, "dither": 0.3, "diversity": 1.0,
     "exposure_cap": 0.5, "exposure_floor": 1.0, "keep_head": 2, "pool": 40},
]


def build_project(root: Path, overrides: dict | None = None, seed: int = 5) -> Params:
    """Write params, raw log, ingested/validated tables, features, model, candidates and front under root
    (the current directory). Returns the params."""
    from tests.conftest import deep_update

    settings = deep_update(copy.deepcopy(SMALL), overrides or {})
    params = load(root, settings)
    write_synthetic_log(Path(params.data.dataset_dir), n_users=60, n_items=50, n_events=1500,
                        n_categories=5, seed=seed, fmt="recbole")
    ingest.main(params)
    for source, dest in ((params.data.interactions, params.validation.interactions),
                         (params.data.items, params.validation.items)):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    features.main(params)
    write_model(params, seed)
    candidates.main(params)
    exposure.main(params)
    write_front(params, FRONT)
    return params


def load(root: Path, settings: dict) -> Params:
    from recmoo_dag.config import load_params

    return load_params(write_params(root, settings))


def write_model(params: Params, seed: int) -> None:
    from recmoo_dag.features import load_features

    torch.manual_seed(seed)
    n_items = load_features(params.features.dir).n_items
    architecture = {"n_items": n_items, **params.model.model_dump()}
    save_model(SeqRecModel(**architecture).eval(), params.train.model_dir, architecture, {"seed": seed})
    save_generator(params.train.model_dir, "model", ease_lambda=100.0, blend_weight=0.5)


def write_front(params: Params, rows: list[dict], split: int = 0) -> None:
    path = Path(params.search.front_of(split))
    path.parent.mkdir(parents=True, exist_ok=True)
    front_rows(rows).to_csv(path, index=False)


def perturb_model(params: Params, seed: int) -> None:
    """A different model (as after retraining): new weights, same architecture, then new candidates."""
    write_model(params, seed)
    candidates.main(params)
    exposure.main(params)


NO_BOUNDS = {"ndcg": 0.0, "ild": 0.0}  # deploy.min_ratio that any policy meets (merged over the defaults)
# Any policy meets the bounds and none regresses beyond tolerance: every deploy promotes.
LOOSE = {"deploy": {"min_ratio": NO_BOUNDS, "tolerance": dict.fromkeys(
    ("ndcg", "ild", "novelty", "coverage", "personalization"), 1.0)}}


def copy_project(base: Path, dest: Path, overrides: dict | None = None) -> Params:
    """A private copy of a built project (every path in params is relative), params re-written with
    `overrides` merged over SMALL. The caller chdirs into `dest` first."""
    from tests.conftest import deep_update

    shutil.copytree(base, dest, dirs_exist_ok=True, symlinks=True)
    return load(dest, deep_update(copy.deepcopy(SMALL), overrides or {}))


_BASE: dict[str, Path] = {}


def base_project(tmp_path_factory) -> Path:
    """The project of `build_project`, built once per test process and shared (read-only) by the
    deploy, lineage and serve tests; each test works on a `copy_project` of it."""
    import os

    if "base" not in _BASE:
        base = tmp_path_factory.mktemp("deploy_base")
        before = os.getcwd()
        os.chdir(base)
        try:
            build_project(base)
        finally:
            os.chdir(before)
        _BASE["base"] = base
    return _BASE["base"]


def deployed_copy(base: Path, dest: Path, rows: list[dict], overrides: dict | None = None) -> Params:
    """A `copy_project` whose front is `rows`, deployed by the deploy stage (the caller chdirs into dest)."""
    from recmoo_dag.stages import deploy

    params = copy_project(base, dest, LOOSE if overrides is None else overrides)
    write_front(params, rows)
    deploy.main(params)
    return params
