"""`recmoo <stage>`: one command per pipeline stage (what dvc.yaml runs) plus operator tools."""
from __future__ import annotations

import argparse
import functools
import sys

from recmoo_dag.config import Params, load_params
from recmoo_dag.errors import RecmooError


def run_stage(name: str, params: Params, args: argparse.Namespace) -> None:
    """The stage's main. Imported on use: `recmoo fetch` must not pay for torch."""
    if name == "fetch":
        from recmoo_dag.stages import fetch as stage
    elif name == "ingest":
        from recmoo_dag.stages import ingest as stage
    elif name == "validate":
        from recmoo_dag.stages import validate as stage
    elif name == "features":
        from recmoo_dag.stages import features as stage
    elif name == "item_text":
        from recmoo_dag.stages import item_text as stage
    elif name == "tune":
        from recmoo_dag.stages import tune as stage
    elif name == "train":
        from recmoo_dag.stages import train

        return train.main(params, resume=args.resume)
    elif name == "candidates":
        from recmoo_dag.stages import candidates as stage
    elif name == "exposure":
        from recmoo_dag.stages import exposure as stage
    elif name == "search":
        from recmoo_dag.stages import search as stage
    elif name == "deploy":
        from recmoo_dag.stages import deploy as stage
    else:
        raise ValueError(f"no stage {name!r}")
    return stage.main(params)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser = argparse.ArgumentParser(prog="recmoo", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(sub.add_parser, parents=[common])  # --params before or after the stage
    sub.add_parser("fetch", help="download MovieLens-100K (checksum-verified) into data.dataset_dir")
    sub.add_parser("ingest", help="read every raw log into the canonical interactions table")
    validate = sub.add_parser("validate", help="validate the ingested data (stage), or log files given as PATHs")
    validate.add_argument("paths", nargs="*", help="log files to check before dropping them into the raw folder")
    validate.add_argument("--format", help="reader for PATHs (default: data.format from params)")
    sub.add_parser("features", help="k-core filter, id maps, held-out windows (features.split), popularity")
    sub.add_parser("item_text", help="embed every item's text (title, categories, tags) with a sentence model")
    sub.add_parser("tune", help="Optuna over the transformer's hyper-parameters on valid NDCG@10 (tune.enabled)")
    train = sub.add_parser("train", help="train the transformer, compare it with popularity, EASE and their blend")
    train.add_argument("--resume", action="store_true", help="continue from train.checkpoint_dir/last.ckpt")
    sub.add_parser("candidates", help="every user's top candidates.n unseen items by model score")
    sub.add_parser("exposure", help="prices that spread every user's list over the catalogue, solved across users")
    sub.add_parser("search", help="NSGA search over re-ranking policies + baselines: front, plot, hypervolumes")
    sub.add_parser("deploy", help="choose a policy of the front, gate it against the champion, publish it")
    serve = sub.add_parser("serve", help="HTTP service of the deployed policy (FastAPI; docs at /docs)")
    serve.add_argument("--host", help="default: serve.host (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: serve.port")
    serve.add_argument("--workers", type=int, help="default: serve.workers")
    recommend = sub.add_parser("recommend", help="what POST /recommend answers, from the command line")
    recommend.add_argument("--user", help="user id (unknown or absent: popularity fallback)")
    recommend.add_argument("--recent", default="", help="live session items, comma-separated, oldest first")
    recommend.add_argument("--exclude", default="", help="items never to return, comma-separated")
    recommend.add_argument("-k", type=int, help="list length (default: serve.default_k)")
    sub.add_parser("reprice", help="re-solve the served version's exposure prices from the lists it serves; gate, publish")
    rollback = sub.add_parser("rollback", help="serve an earlier version again (default: the previous one)")
    rollback.add_argument("version", nargs="?", help="e.g. v0002 or 2")
    lineage = sub.add_parser("lineage", help="the chain from a deployed version back to the raw files")
    lineage.add_argument("version", nargs="?", help="default: the served version")
    lineage.add_argument("--verify", action="store_true", help="recompute every hash; exit 1 on any mismatch")
    ui = sub.add_parser("ui", help="Dagster UI: webserver + daemon, run history in .dagster_home/")
    ui.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (loopback only)")
    ui.add_argument("--port", type=int, default=3000, help="default: 3000")
    synth = sub.add_parser("synth", help="write a realistic synthetic interaction log")
    synth.add_argument("--users", type=int, default=1000)
    synth.add_argument("--items", type=int, default=500)
    synth.add_argument("--events", type=int, default=50_000)
    synth.add_argument("--categories", type=int, default=12)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--format", choices=("recbole", "movielens-csv"), default="recbole")
    synth.add_argument("--out", required=True, help="output folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "synth":
            from recmoo_dag.synth import write_synthetic_log

            written = write_synthetic_log(args.out, n_users=args.users, n_items=args.items, n_events=args.events,
                                          n_categories=args.categories, seed=args.seed, fmt=args.format)
            print("synth: wrote " + ", ".join(str(p) for p in written))
            return 0
        if args.command == "ui":
            from recmoo_dag.defs.ui import run_ui

            return run_ui(args.host, args.port)
        params = load_params(args.params)
        if args.command == "validate" and args.paths:
            from recmoo_dag.stages.validate import check_files

            return check_files(params, args.paths, args.format)
        if args.command == "reprice":
            from recmoo_dag.reprice import main as reprice

            reprice(params)
            return 0
        if args.command in ("serve", "recommend", "rollback", "lineage"):
            from recmoo_dag.ops import operate

            return operate(args, params)
        run_stage(args.command, params, args)
        return 0
    except RecmooError as err:
        print(f"recmoo {args.command}: error: {err}", file=sys.stderr)
        return 1
    except FileNotFoundError as err:
        print(f"recmoo {args.command}: error: missing input {err.filename or err}: "
              f"run the upstream stages first (dvc repro {args.command})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
