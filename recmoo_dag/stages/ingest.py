"""`recmoo ingest`: every raw log under data.raw_dir, incoming batches included, into one table."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from recmoo_dag.config import Params
from recmoo_dag.data import drop_repeats, ingest_stats, items_table, read_logs
from recmoo_dag.io import write_json, write_parquet


def main(params: Params) -> None:
    log = read_logs(Path(params.data.raw_dir), params.data.format, params.data.generic)
    log = replace(log, interactions=drop_repeats(log.interactions, params.data.repeats))
    write_parquet(params.data.interactions, log.interactions)
    write_parquet(params.data.items, items_table(log))
    stats = ingest_stats(log)
    write_json(params.data.stats, stats)
    print(f"ingest: {stats['rows']} rows, {stats['users']} users, {stats['items']} items "
          f"from {len(log.files)} file(s)")
