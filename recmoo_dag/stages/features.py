"""`recmoo features`: validated tables -> features.dir (k-core, id maps, held-out windows of features.split, popularity)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from recmoo_dag.config import Params
from recmoo_dag.features import build_features, write_features
from recmoo_dag.io import write_json


def main(params: Params) -> None:
    interactions = pd.read_parquet(params.validation.interactions)
    items = pd.read_parquet(params.validation.items)
    tables = build_features(interactions, items if len(items) else None, params.features)
    write_features(tables, Path(params.features.dir))
    meta = tables.meta
    write_json(params.features.stats, meta.stats())
    print(f"features: {meta.n_users} users, {meta.n_items} items, {meta.n_interactions} events")
