"""Operator commands on the deployed store: `recmoo serve | recommend | rollback | lineage`.

Thin shells over serve.py, recommender.py, store.py and lineage.py; imports are lazy so that
`recmoo rollback` and `recmoo lineage` answer without loading torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recmoo_dag import store
from recmoo_dag.config import Params


def operate(args: argparse.Namespace, params: Params) -> int:
    if args.command == "serve":
        from recmoo_dag.serve import run

        cfg = params.serve
        run(args.params, args.host or cfg.host, args.port or cfg.port, args.workers or cfg.workers)
        return 0
    if args.command == "recommend":
        k = params.serve.default_k if args.k is None else args.k
        return recommend(params, args.user, _ids(args.recent), k, _ids(args.exclude))
    if args.command == "rollback":
        before, after = store.rollback(params.deploy.store, args.version)
        print(f"rollback: now serving {after} (was {before}); running services pick it up within "
              f"{params.serve.reload_check_ms} ms")
        return 0
    if args.command == "lineage":
        return lineage(params, args.version, args.verify)
    raise ValueError(f"unknown operator command {args.command!r}")


def recommend(params: Params, user: str | None, recent: list[str], k: int, exclude: list[str]) -> int:
    """Print the JSON POST /recommend would answer (same Recommender, same limits)."""
    import torch

    from recmoo_dag.recommender import Recommender

    if not 1 <= k <= params.serve.max_k:
        print(f"recmoo recommend: error: -k must be in [1, {params.serve.max_k}] (serve.max_k)", file=sys.stderr)
        return 2
    torch.set_num_threads(params.serve.torch_threads)
    recommender = Recommender.load(store.version_dir(params.deploy.store), params.serve.session_window)
    answer = recommender.recommend(user, recent, k, exclude)
    print(json.dumps({"items": answer.items, "policy_version": answer.version, "source": answer.source}, indent=2))
    return 0


def lineage(params: Params, version: str | None, verify: bool) -> int:
    """Print the chain; with verify, recompute every hash and check today's params, and exit 1
    naming each mismatch."""
    from recmoo_dag.lineage import describe, missing_files
    from recmoo_dag.lineage import verify as check

    store_dir = params.deploy.store
    folder = store.version_dir(store_dir, version)
    manifest = store.read_manifest(store_dir, folder.name)
    served = store.current_version(store_dir)
    print(describe(manifest) + ("" if folder.name != served else "\n  (this version is being served)"))
    if not verify:
        return 0
    problems = check(manifest, folder, params.model_dump(by_alias=True, mode="json"), Path("."))
    gone = missing_files(manifest)
    if gone:
        print(f"\nnot on disk any more (not checked): {', '.join(gone)}")
    if problems:
        print(f"\nlineage --verify: {len(problems)} input(s) no longer match {folder.name}:", file=sys.stderr)
        for problem in problems:
            print(f"  MISMATCH {problem}", file=sys.stderr)
        return 1
    print(f"\nlineage --verify: every hash still on disk matches {folder.name}")
    return 0


def _ids(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
