"""`recmoo <stage>`: one command per pipeline stage (what dvc.yaml runs) plus operator tools."""
from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable

from recmoo_dag.config import ConfigError, load_params

# Stage name -> "module:function(params)". Imported lazily: `recmoo fetch` must not pay for torch.
PIPELINE_STAGES = {
    "fetch": "recmoo_dag.stages:fetch",
    "ingest": "recmoo_dag.stages:ingest",
    "validate": "recmoo_dag.stages:validate",
    "features": "recmoo_dag.stages:features",
}


def _stage(name: str) -> Callable:
    module, function = PIPELINE_STAGES[name].split(":")
    return getattr(importlib.import_module(module), function)


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
    sub.add_parser("features", help="k-core filter, id maps, leave-one-out split, popularity")
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
    from recmoo_dag.data import DataError
    from recmoo_dag.features import FeaturesError
    from recmoo_dag.stages import StageFailed

    try:
        if args.command == "synth":
            from recmoo_dag.synth import write_synthetic_log

            written = write_synthetic_log(args.out, n_users=args.users, n_items=args.items, n_events=args.events,
                                          n_categories=args.categories, seed=args.seed, fmt=args.format)
            print("synth: wrote " + ", ".join(str(p) for p in written))
            return 0
        params = load_params(args.params)
        if args.command == "validate" and args.paths:
            from recmoo_dag.stages import validate_files

            return validate_files(params, args.paths, args.format)
        _stage(args.command)(params)
        return 0
    except (ConfigError, DataError, FeaturesError, StageFailed) as err:
        print(f"recmoo {args.command}: error: {err}", file=sys.stderr)
        return 1
    except FileNotFoundError as err:
        print(f"recmoo {args.command}: error: missing input {err.filename or err}: "
              f"run the upstream stages first (dvc repro {args.command})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
