"""The data stages as thin mains: read params, call the pure core, write the outputs.

Each function here is what `recmoo <stage>` runs and what `dvc.yaml` calls; Dagster runs the
same DVC stages, so there is one implementation of every step.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from recmoo_dag.config import Params
from recmoo_dag.data import DataError, RawLog, fetch_movielens, read_interactions, read_logs
from recmoo_dag.features import build_features, write_features
from recmoo_dag.io import write_json, write_parquet
from recmoo_dag.synth import write_synthetic_log


class StageFailed(RuntimeError):
    """A stage refused its input; the message says why and nothing downstream was written."""


def fetch(params: Params) -> None:
    dest = Path(params.data.dataset_dir)
    if params.data.source == "synthetic":
        shape = params.data.synthetic
        written = write_synthetic_log(dest, n_users=shape.users, n_items=shape.items, n_events=shape.events,
                                      n_categories=shape.categories, seed=params.seed, fmt=params.data.format)
        print(f"fetch: synthetic log ({shape.events} events, seed {params.seed}) into {written[0].parent}")
        return
    provenance = fetch_movielens(dest, params.data.source)
    print(f"fetch: MovieLens-100K from {provenance['source']} into {dest}, sha256 verified")


def ingest(params: Params) -> None:
    log = read_logs(Path(params.data.raw_dir), params.data.format, params.data.generic)
    write_parquet(params.data.interactions, log.interactions)
    write_parquet(params.data.items, _items_or_empty(log))
    stats = interaction_stats(log.interactions)
    stats["files"] = [str(p) for p in log.files]
    stats["has_item_metadata"] = log.items is not None
    write_json(params.data.stats, stats)
    print(f"ingest: {stats['rows']} rows, {stats['users']} users, {stats['items']} items "
          f"from {len(log.files)} file(s)")


def _items_or_empty(log: RawLog) -> pd.DataFrame:
    if log.items is not None:
        return log.items
    return pd.DataFrame({"item_id": pd.Series(dtype="string"), "title": pd.Series(dtype="string"),
                         "categories": pd.Series(dtype=object)})


def interaction_stats(frame: pd.DataFrame) -> dict:
    return {
        "rows": len(frame),
        "users": int(frame["user_id"].nunique()),
        "items": int(frame["item_id"].nunique()),
        "first_timestamp": int(frame["timestamp"].min()),
        "last_timestamp": int(frame["timestamp"].max()),
        "rated_share": float(frame["rating"].notna().mean()),
    }


def validate(params: Params) -> None:
    from recmoo_dag.validation import validate_interactions

    rules = params.validation
    interactions = pd.read_parquet(params.data.interactions)
    report = validate_interactions(interactions, rules, whole_dataset=True, source=params.data.interactions)
    write_json(rules.report, report.to_json())
    if not report.success:
        raise StageFailed(f"validate: {params.data.interactions} failed validation "
                          f"(full report: {rules.report}):\n{report.summary}")
    # Exact repeats passed the duplicate-share rule (they are rare); the model must not see them twice.
    deduplicated = interactions.drop_duplicates(["user_id", "item_id", "timestamp"], keep="first")
    write_parquet(rules.interactions, deduplicated)
    write_parquet(rules.items, pd.read_parquet(params.data.items))
    print(f"validate: {report.summary.splitlines()[0]}")


def features(params: Params) -> None:
    interactions = pd.read_parquet(params.validation.interactions)
    items = pd.read_parquet(params.validation.items)
    tables = build_features(interactions, items if len(items) else None, params.features)
    write_features(tables, Path(params.features.dir))
    meta = tables["meta"]
    write_json(params.features.stats, {k: meta[k] for k in
                                       ("n_users", "n_items", "n_interactions", "n_train", "density")})
    print(f"features: {meta['n_users']} users, {meta['n_items']} items, {meta['n_interactions']} events")


def validate_files(params: Params, paths: list[str], fmt: str | None = None) -> int:
    """Check log batches with the stage's schema and row rules (size minimums are for the whole dataset)."""
    from recmoo_dag.validation import validate_interactions

    fmt = fmt or params.data.format
    failed = 0
    for path in paths:
        try:
            frame = read_interactions(Path(path), fmt, params.data.generic)
        except DataError as err:
            print(f"FAIL {err}", file=sys.stderr)
            failed += 1
            continue
        report = validate_interactions(frame, params.validation, whole_dataset=False, source=str(path))
        print(("ok   " if report.success else "FAIL ") + report.summary, file=sys.stdout if report.success else sys.stderr)
        failed += not report.success
    return 1 if failed else 0
