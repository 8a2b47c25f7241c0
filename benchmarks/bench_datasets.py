"""The whole pipeline on logs the defaults were never fitted to: one table row per log.

Each log runs in its own scratch project (this checkout's dvc.yaml and code, params.yaml with the
defaults plus the log's data mapping from README "Your own logs"), stage by stage with `dvc repro`,
and the rows report users/items, the tuned values, test NDCG@10 of the transformer, the blend, EASE
and most-popular with their 95% intervals (a bootstrap over users), the transformer's paired ratio to
EASE, the generator chosen on valid, tune + train seconds, NSGA's hypervolume against random search,
and the served policy over accuracy-only, paired, on test (and on valid's confirmation users).
`--compare-splits` runs the other evaluation protocols (features.split) up to train, side by side,
with the default protocol's tuned values (tuning off: only the protocol differs). `--relabel SEED`
runs each log with its user and item ids renamed by a seeded bijection (each kind onto its own set
of ids, in every file that names them; nothing else changes). Ids are names: the deterministic parts
(EASE, most-popular) must score the same, and the rest moves only as much as the draws a renaming
redoes (the model's initial rows, the users' split and sample, the dither), as any other seed would.

Logs: MovieLens-100K (the default), ml-latest-small and Last.fm-2K from ../shared/datasets/ (skipped
with a message when that folder is absent: they are never part of the project), and a synthetic log.

    .venv/bin/python benchmarks/bench_datasets.py [--logs ml-100k ml-latest-small lastfm-2k synthetic]
                                                  [--workdir /tmp/recmoo-bench] [--set key=value ...]
                                                  [--compare-splits global_time leave_one_out] [--refresh]
                                                  [--relabel SEED]
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recmoo_dag.fetch import fetch_movielens
from recmoo_dag.results import DeployReport, SearchMetrics, TrainReport

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
SPLITS = ("user_tail", "global_time", "leave_one_out")
STAGES = tuple(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])  # every stage, in the order dvc repro runs them

# The data mappings of README "Your own logs", verbatim.
LOGS = {
    "ml-100k": ({}, None),
    "ml-latest-small": ({"data": {"source": "local", "dataset_dir": "data/raw/ml-latest-small",
                                  "format": "movielens-csv"}}, "ml-latest-small"),
    "lastfm-2k": ({"data": {"source": "local", "dataset_dir": "data/raw/lastfm-2k", "format": "generic",
                            "repeats": "first",
                            "generic": {"pattern": "user_taggedartists.dat", "sep": "\t", "user_col": "userID",
                                        "item_col": "artistID", "timestamp_col": ["year", "month", "day"],
                                        "timestamp_unit": "strptime", "timestamp_format": "%Y-%m-%d",
                                        "rating_col": None,
                                        "items": {"pattern": "artists.dat", "sep": "\t", "item_id_col": "id",
                                                  "title_col": "name", "categories_col": None},
                                        "tags": {"pattern": "user_taggedartists.dat", "sep": "\t",
                                                 "item_col": "artistID", "tag_col": "tagID"},
                                        "tag_names": {"pattern": "tags.dat", "sep": "\t", "id_col": "tagID",
                                                      "name_col": "tagValue", "encoding": "latin-1"}}},
                   # 5 tag dates of 1956-1979 predate Last.fm (readme): kept as those users' oldest events.
                   "validate": {"min_timestamp": -631152000}}, "lastfm-2k"),
    "synthetic": ({"data": {"source": "synthetic", "synthetic": {"users": 1000, "items": 500, "events": 50000,
                                                                 "categories": 12}}}, None),
}


# Every column of each log's files that names a user or an item: what --relabel renames.
ID_COLUMNS = {
    "ml-100k": {"ml-100k.inter": {"user_id:token": "user", "item_id:token": "item"},
                "ml-100k.item": {"item_id:token": "item"}, "ml-100k.user": {"user_id:token": "user"}},
    "ml-latest-small": {"ratings.csv": {"userId": "user", "movieId": "item"},
                        "tags.csv": {"userId": "user", "movieId": "item"},
                        "movies.csv": {"movieId": "item"}, "links.csv": {"movieId": "item"}},
    "lastfm-2k": {"user_taggedartists.dat": {"userID": "user", "artistID": "item"},
                  "user_artists.dat": {"userID": "user", "artistID": "item"}, "artists.dat": {"id": "item"}},
}


def relabelled(source: Path, dest: Path, columns: dict[str, dict[str, str]], seed: int) -> None:
    """`source`'s files in `dest`, each user id and item id replaced by its image under a seeded
    permutation of that kind's ids (the union over the files), every other byte of a value kept."""
    def dialect(name: str) -> dict:
        csv_file = name.endswith(".csv")  # the CSVs quote titles holding commas; the tab files never quote
        return {"sep": "," if csv_file else "\t", "encoding": "latin-1",
                "quoting": csv.QUOTE_MINIMAL if csv_file else csv.QUOTE_NONE}
    dest.mkdir(parents=True, exist_ok=True)
    tables = {name: pd.read_csv(source / name, dtype=str, keep_default_na=False, **dialect(name)) for name in columns}
    rng = np.random.default_rng(seed)
    renames = {}
    for kind in ("user", "item"):
        ids = np.unique(np.concatenate([tables[name][column].to_numpy(str) for name, kinds in columns.items()
                                        for column, of in kinds.items() if of == kind]))
        renames[kind] = dict(zip(ids, ids[rng.permutation(len(ids))]))
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        if path.name not in columns:
            shutil.copy(path, dest / path.name)
            continue
        table = tables[path.name]
        for column, kind in columns[path.name].items():
            table[column] = table[column].map(renames[kind])
        table.to_csv(dest / path.name, index=False, **dialect(path.name))


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def set_value(params: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    for part in parents:
        params = params.setdefault(part, {})
    params[leaf] = yaml.safe_load(value)


def project(root: Path, overrides: dict, folder: str | None, extra: list[str], refresh: bool = False,
            relabel: tuple[str, int] | None = None) -> Path:
    """A scratch git + DVC project with this checkout's pipeline and the log's params. With `refresh`
    and an earlier run there, only the code, dvc.yaml and params are replaced (DVC then re-runs the
    stages they change) and the deploy store is emptied, so the deploy is a first one again. With
    `relabel` (the log's name, a seed), the log's files go in with their ids renamed (`relabelled`);
    ML-100K is then fetched here and read as a local log."""
    if relabel and not folder:
        overrides = deep_update(copy.deepcopy(overrides), {"data": {"source": "local"}})
    refresh = refresh and (root / "dvc.lock").is_file()
    if refresh:
        shutil.rmtree(root / "recmoo_dag")
        shutil.rmtree(root / "deployments", ignore_errors=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "recmoo_dag", root / "recmoo_dag", ignore=shutil.ignore_patterns("__pycache__"))
    params = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    for assignment in extra:
        set_value(params, assignment)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if refresh:
        return root
    dataset = root / params["data"]["dataset_dir"]
    if relabel:
        name, seed = relabel
        with tempfile.TemporaryDirectory() as fetched:
            if not folder:
                fetch_movielens(Path(fetched))
            relabelled(SHARED / folder if folder else Path(fetched), dataset, ID_COLUMNS[name], seed)
    elif folder:
        shutil.copytree(SHARED / folder, dataset)
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, check=True, env=env(root))
    return root


def env(root: Path) -> dict:
    """The project's own copy of the code runs its stages (this checkout may change meanwhile)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1"}


def run(root: Path, stages: tuple[str, ...] = STAGES, earlier: dict[str, float] | None = None) -> dict[str, float]:
    """The stages in order with `dvc repro --single-item`; their wall seconds (a stage DVC skips as
    unchanged keeps its seconds from `earlier`, the run that produced its outputs)."""
    seconds = {}
    for stage in stages:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=root, env=env(root),
                              capture_output=True, text=True, check=False)
        seconds[stage] = time.perf_counter() - start
        if earlier and stage in earlier and "didn't change, skipping" in proc.stdout:
            seconds[stage] = earlier[stage]
        lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{stage}:")]
        print(f"  {stage:<10} {seconds[stage]:6.1f}s  {lines[-1][len(stage) + 2:][:150] if lines else ''}", flush=True)
        if proc.returncode != 0:
            refusal = [line for line in proc.stderr.splitlines() if line.startswith(f"recmoo {stage}: error:")]
            raise StageFailed(refusal[0] if refusal else f"{root}: stage {stage} failed:\n{proc.stdout[-2000:]}\n"
                                                         f"{proc.stderr[-2000:]}")
    return seconds


class StageFailed(RuntimeError):
    """A stage exited non-zero; the message is its one-line refusal when it gave one."""


def accuracy_row(name: str, split: str, root: Path, seconds: dict[str, float]) -> dict:
    """The generators' test accuracy with intervals, and the transformer's paired ratio to EASE."""
    read = lambda path: json.loads((root / path).read_text())
    features = read("metrics/features.json")
    train = TrainReport.from_json(read("metrics/train.json")).comparison
    tuned = read("models/tuned.json")
    test = lambda evaluation: (evaluation.test.ndcg, list(evaluation.test.intervals["ndcg"]), evaluation.test.hr)
    return {
        "log": name, "split": split, "users": features["n_users"], "items": features["n_items"],
        "test_users": train.model.test.users, "test_baskets": train.model.test.baskets,
        "tuned": {**tuned["model"], **tuned["train"]} if tuned.get("enabled") else "off",
        "model": test(train.model), "blend": test(train.blend), "ease": test(train.ease), "pop": test(train.pop),
        "generator": train.generator,
        "vs_ease": {kind: train.vs_ease[kind]["test"] for kind in ("model", "blend", "pop")},
        "tune_train_s": seconds["tune"] + seconds["train"], "total_s": sum(seconds.values()),
    }


def row(name: str, split: str, root: Path, seconds: dict[str, float]) -> dict:
    """accuracy_row, the search's hypervolumes and the served policy over accuracy-only on test."""
    read = lambda path: json.loads((root / path).read_text())
    search = SearchMetrics.from_json(read("metrics/search.json"))
    deploy = DeployReport.from_json(read("metrics/deploy.json"))
    paired = lambda ratios, intervals, key: (ratios[key], list(intervals[key])) if ratios else None
    return {
        **accuracy_row(name, split, root, seconds),
        "hv_nsga": search.hypervolume_test["nsga"], "hv_random": search.hypervolume_test["random"],
        "paired_se_all": search.paired_se_all, "served": deploy.version, "fallback": deploy.fallback,
        "reason": deploy.reason, "policy": deploy.policy, "gate_power": deploy.power, "ratio_needed": deploy.needed,
        "served_vs_accuracy_only": {key: paired(deploy.ratio, deploy.ratio_ci, key)
                                    for key in ("ndcg", "coverage", "ild", "novelty", "personalization")},
        "valid_vs_accuracy_only": {key: paired(deploy.valid_ratio, deploy.valid_ratio_ci, key)
                                   for key in ("ndcg", "coverage", "ild")},
    }


def interval(value: tuple[float, list[float]] | None, scale: str = "ratio") -> str:
    if value is None:
        return "-"
    point, (low, high) = value
    return f"{point:.3f} [{low:.3f}, {high:.3f}]" if scale == "ratio" else f"{point:.4f} [{low:.4f}, {high:.4f}]"


def print_tables(rows: list[dict]) -> None:
    print("\ntest window, generator chosen on valid; NDCG@10 with its 95% interval (bootstrap over users)")
    header = (f"{'log':<26}{'split':<14}{'users':>6}{'baskets':>8} | {'transformer':>25}{'blend':>25}{'EASE':>25}"
              f"{'pop':>25} | {'gen':>6} | {'transformer / EASE, paired':>26}{'t+t s':>6}")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "refused" in r:
            print(f"{r['log']:<26}{r['split']:<14} refused: {r['refused'][:160]}")
            continue
        cell = lambda v: interval((v[0], v[1]), "value")
        print(f"{r['log']:<26}{r['split']:<14}{r['test_users']:>6}{r['test_baskets']:>8} | {cell(r['model']):>25}"
              f"{cell(r['blend']):>25}{cell(r['ease']):>25}{cell(r['pop']):>25} | {r['generator']:>6} | "
              f"{interval(r['vs_ease']['model']):>26}{r['tune_train_s']:>6.0f}")
    served = [r for r in rows if "served" in r]
    if served:
        print("\nthe served policy over accuracy-only, paired: test (valid: on the held-out confirmation users)")
        header = (f"{'log':<26}{'served':>8} | {'test NDCG@10':>22}{'coverage@10':>22}{'ILD@10':>22} | "
                  f"{'valid NDCG@10':>22} | {'HV nsga/rnd':>11}{'all s':>6}")
        print(header + "\n" + "-" * len(header))
        for r in served:
            s, v = r["served_vs_accuracy_only"], r["valid_vs_accuracy_only"]
            name = (r["served"] or "none") + ("*" if r["fallback"] else "")
            print(f"{r['log']:<26}{name:>8} | {interval(s['ndcg']):>22}{interval(s['coverage']):>22}"
                  f"{interval(s['ild']):>22} | {interval(v['ndcg']):>22} | "
                  f"{r['hv_nsga'] / max(r['hv_random'], 1e-12):>11.3f}{r['total_s']:>6.0f}")
        print("(* = the accuracy-only fallback is served)")
        for r in served:
            print(f"{r['log']}: {r['reason']}")
            print(f"  policy {r['policy']}")
            if r["ratio_needed"] is not None:  # what the test window can certify at all (deploy.json gate.power)
                print(f"  true test ratio the gate certifies {r['gate_power']:.0%} of the time: "
                      + ", ".join(f"{name} {value:.3f}" for name, value in r["ratio_needed"].items()))
    for r in rows:
        if "tuned" in r:
            print(f"tuned values, {r['log']} ({r['split']}): {r['tuned']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="*", default=list(LOGS), choices=list(LOGS))
    parser.add_argument("--workdir", default="/tmp/recmoo-bench")
    parser.add_argument("--set", nargs="*", default=[], help="params overrides for every log, e.g. tune.trials=4")
    parser.add_argument("--compare-splits", nargs="*", default=[], choices=SPLITS,
                        help="other protocols, run up to train with the default protocol's tuned values")
    parser.add_argument("--reuse", action="store_true", help="read the rows of projects already finished in --workdir")
    parser.add_argument("--refresh", action="store_true",
                        help="re-run projects already in --workdir with this checkout's code and params: DVC re-runs "
                             "only the stages they change; the deploy store starts empty")
    parser.add_argument("--relabel", type=int, default=None, metavar="SEED",
                        help="rename every user and item id by a bijection drawn from this seed (projects *-relabelSEED)")
    args = parser.parse_args()
    default = yaml.safe_load((REPO / "params.yaml").read_text())["features"]["split"]
    rows, workdir = [], Path(args.workdir)
    for name in args.logs:
        overrides, folder = LOGS[name]
        if args.relabel is not None and name not in ID_COLUMNS:
            print(f"{name}: skipped, --relabel renames the ids in a real log's files")
            continue
        if folder and not (SHARED / folder).is_dir():
            print(f"{name}: skipped, {SHARED / folder} is absent (the shared datasets are not part of the project)")
            continue
        suffix = f"-relabel{args.relabel}" if args.relabel is not None else ""
        relabel = (name, args.relabel) if args.relabel is not None else None
        label = name + suffix
        for split in [default, *(s for s in args.compare_splits if s != default)]:
            root, last = workdir / f"{name}-{split}{suffix}", "deploy" if split == default else "train"
            finished = json.loads((root / "seconds.json").read_text()) if (root / "seconds.json").is_file() else None
            if not (args.reuse and finished and last in finished):
                print(f"{name} ({split}): {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
                extra = [*args.set, f"features.split={split}"]
                if split != default:  # only the protocol differs: the default protocol's tuned values, no tuning
                    tuned = json.loads((workdir / f"{name}-{default}{suffix}" / "models" / "tuned.json").read_text())
                    extra += ["tune.enabled=false", *(f"{section}.{key}={json.dumps(value)}" for section in ("model", "train")
                                                      for key, value in tuned.get(section, {}).items())]
                earlier = finished if args.refresh else None
                root = project(root, overrides, folder, extra, args.refresh, relabel)
                try:
                    finished = run(root, STAGES[:STAGES.index(last) + 1], earlier)
                except StageFailed as failure:  # e.g. a global-time window with too few users: a finding, not a crash
                    if split == default:
                        raise
                    rows.append({"log": label, "split": split, "refused": str(failure)})
                    print(f"  refused: {failure}", flush=True)
                    continue
                (root / "seconds.json").write_text(json.dumps(finished))
            rows.append(row(label, split, root, finished) if split == default else
                        accuracy_row(label, split, root, finished))
            with (workdir / "results.jsonl").open("a") as out:
                out.write(json.dumps(rows[-1]) + "\n")
    if rows:
        print_tables(rows)


if __name__ == "__main__":
    main()
