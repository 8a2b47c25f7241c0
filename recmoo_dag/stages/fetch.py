"""`recmoo fetch`: the raw log into data.dataset_dir (MovieLens-100K, a synthetic log, or your own files)."""
from __future__ import annotations

from pathlib import Path

from recmoo_dag.config import Params
from recmoo_dag.fetch import fetch_movielens, record_local
from recmoo_dag.synth import write_synthetic_log


def main(params: Params) -> None:
    dest = Path(params.data.dataset_dir)
    if params.data.source == "synthetic":
        shape = params.data.synthetic
        written = write_synthetic_log(dest, n_users=shape.users, n_items=shape.items, n_events=shape.events,
                                      n_categories=shape.categories, seed=params.seed, fmt=params.data.format)
        print(f"fetch: synthetic log ({shape.events} events, seed {params.seed}) into {written[0].parent}")
        return
    if params.data.source == "local":
        provenance = record_local(dest)
        print(f"fetch: {len(provenance['sha256'])} local file(s) in {dest}, sha256 recorded in SOURCE.json")
        return
    provenance = fetch_movielens(dest, params.data.source)
    print(f"fetch: MovieLens-100K from {provenance['source']} into {dest}, sha256 verified")
