"""The whole pipeline on logs the defaults were never fitted to: one table row per log.

Each log runs in its own scratch project (this checkout's dvc.yaml and code, params.yaml with the
defaults plus the log's data mapping from README "Your own logs"), stage by stage with `dvc repro`,
and the row reports users/items, the tuned values, test NDCG@10 and HR@10 of the transformer, the
blend, EASE and most-popular, the generator chosen on valid, tune + train seconds, NSGA's
hypervolume against random search, and the served policy against accuracy-only on test.

Logs: MovieLens-100K (the default), ml-latest-small and Last.fm-2K from ../shared/datasets/ (skipped
with a message when that folder is absent: they are never part of the project), and a synthetic log.

    .venv/bin/python benchmarks/bench_datasets.py [--logs ml-100k ml-latest-small lastfm-2k synthetic]
                                                  [--workdir /tmp/recmoo-bench] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recmoo_dag.results import DeployReport, SearchMetrics, TrainReport

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
STAGES = ("fetch", "ingest", "validate", "features", "item_text", "tune", "train", "candidates", "search", "deploy")

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


def project(root: Path, overrides: dict, folder: str | None, extra: list[str]) -> Path:
    """A scratch git + DVC project with this checkout's pipeline and the log's params."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "recmoo_dag", root / "recmoo_dag", ignore=shutil.ignore_patterns("__pycache__"))
    params = deep_update(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    for assignment in extra:
        set_value(params, assignment)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if folder:
        shutil.copytree(SHARED / folder, root / params["data"]["dataset_dir"])
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, check=True, env=env(root))
    return root


def env(root: Path) -> dict:
    """The project's own copy of the code runs its stages (this checkout may change meanwhile)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1"}


def run(root: Path) -> dict[str, float]:
    """Every stage in order with `dvc repro --single-item`; their wall seconds."""
    seconds = {}
    for stage in STAGES:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=root, env=env(root),
                              capture_output=True, text=True, check=False)
        seconds[stage] = time.perf_counter() - start
        lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{stage}:")]
        print(f"  {stage:<10} {seconds[stage]:6.1f}s  {lines[-1][len(stage) + 2:][:150] if lines else ''}", flush=True)
        if proc.returncode != 0:
            raise SystemExit(f"{root}: stage {stage} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def row(name: str, root: Path, seconds: dict[str, float]) -> dict:
    read = lambda path: json.loads((root / path).read_text())
    features = read("metrics/features.json")
    train = TrainReport.from_json(read("metrics/train.json")).comparison
    search = SearchMetrics.from_json(read("metrics/search.json"))
    deploy = DeployReport.from_json(read("metrics/deploy.json"))
    tuned = read("models/tuned.json")
    test = lambda evaluation: (evaluation.test.ndcg, evaluation.test.hr)
    gain = lambda name: deploy.deployed[name] / deploy.accuracy_only[name] - 1
    return {
        "log": name, "users": features["n_users"], "items": features["n_items"],
        "tuned": {**tuned["model"], **tuned["train"]} if tuned.get("enabled") else "off",
        "model": test(train.model), "blend": test(train.blend), "ease": test(train.ease),
        "pop": test(train.pop), "generator": train.generator,
        "tune_train_s": seconds["tune"] + seconds["train"], "total_s": sum(seconds.values()),
        "hv_nsga": search.hypervolume_test["nsga"], "hv_random": search.hypervolume_test["random"],
        "served": deploy.version, "fallback": bool(deploy.fallback),
        "served_vs_accuracy_only": {"ndcg": gain("ndcg"), "coverage": gain("coverage"), "ild": gain("ild")},
    }


def print_table(rows: list[dict]) -> None:
    print("\ntest split; the generator is chosen on valid; gains of the served policy vs accuracy-only on test")
    header = (f"{'log':<16}{'users':>6}{'items':>6} | {'transformer':>13}{'blend':>13}{'EASE':>13}{'pop':>13} | "
              f"{'generator':>9}{'t+t s':>7}{'all s':>7} | {'HV nsga/rnd':>11} | {'served':>7}{'NDCG':>7}{'cov':>7}"
              f"{'ILD':>7}")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        pair = lambda v: f"{v[0]:.4f}/{v[1]:.3f}"
        s = r["served_vs_accuracy_only"]
        served = (r["served"] or "none") + ("*" if r["fallback"] else "")
        print(f"{r['log']:<16}{r['users']:>6}{r['items']:>6} | {pair(r['model']):>13}{pair(r['blend']):>13}"
              f"{pair(r['ease']):>13}{pair(r['pop']):>13} | {r['generator']:>9}{r['tune_train_s']:>7.0f}"
              f"{r['total_s']:>7.0f} | {r['hv_nsga'] / max(r['hv_random'], 1e-12):>11.3f} | {served:>7}"
              f"{s['ndcg']:>+7.1%}{s['coverage']:>+7.1%}{s['ild']:>+7.1%}")
    print("(NDCG@10/HR@10 pairs; * = the accuracy-only fallback is served)")
    for r in rows:
        print(f"tuned values, {r['log']}: {r['tuned']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", nargs="*", default=list(LOGS), choices=list(LOGS))
    parser.add_argument("--workdir", default="/tmp/recmoo-bench")
    parser.add_argument("--set", nargs="*", default=[], help="params overrides for every log, e.g. tune.trials=4")
    args = parser.parse_args()
    rows = []
    for name in args.logs:
        overrides, folder = LOGS[name]
        if folder and not (SHARED / folder).is_dir():
            print(f"{name}: skipped, {SHARED / folder} is absent (the shared datasets are not part of the project)")
            continue
        print(f"{name}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        root = project(Path(args.workdir) / name, overrides, folder, args.set)
        rows.append(row(name, root, run(root)))
        (Path(args.workdir) / "results.jsonl").open("a").write(json.dumps(rows[-1]) + "\n")
    if rows:
        print_table(rows)


if __name__ == "__main__":
    main()
