"""Accuracy and cost of the model stages on MovieLens-100K: popularity, EASE and the transformer.

Runs `recmoo train` and `recmoo candidates` in fresh processes (as `dvc repro` would) inside a
scratch copy of params.yaml and the built features, so the project's own outputs stay untouched.
Prints one table: valid and test NDCG@10 / HR@10 / MRR of each method, training wall time (fit
and whole stage) and CPU time, epochs, and the candidates stage's time.

    python benchmarks/bench_model.py [--params params.yaml] [--set train.lr=0.003 ...] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, workdir: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, output) of `recmoo <name>` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "recmoo_dag.cli", name], cwd=workdir, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"recmoo {name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def set_value(params: dict, assignment: str) -> None:
    key, value = assignment.split("=", 1)
    *parents, leaf = key.split(".")
    for part in parents:
        params = params[part]
    params[leaf] = yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--set", nargs="*", default=[], help="overrides, e.g. train.lr=0.003 model.n_layers=1")
    parser.add_argument("--keep", help="run in this folder and keep it (default: a temp folder)")
    args = parser.parse_args()

    params = yaml.safe_load(Path(args.params).read_text())
    for assignment in args.set:
        set_value(params, assignment)
    features = REPO / params["features"]["dir"]
    if not (features / "meta.json").is_file():
        raise SystemExit(f"{features}: no features; run `recmoo fetch && recmoo ingest && recmoo validate && "
                         "recmoo features` first")
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_model_"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(features, workdir / params["features"]["dir"], dirs_exist_ok=True)

    train_wall, train_cpu, _ = stage("train", workdir)
    cand_wall, _, cand_out = stage("candidates", workdir)
    metrics = json.loads((workdir / params["train"]["metrics"]).read_text())
    config = json.loads((workdir / params["train"]["model_dir"] / "config.json").read_text())
    cand_inner = float(re.search(r"in ([0-9.]+)s", cand_out).group(1))

    rows = [("popularity", metrics["baselines"]["pop"]),
            (f"EASE (λ={config['ease_lambda']:g})", metrics["baselines"]["ease"]),
            ("transformer", metrics["model"])]
    print(f"\nMovieLens-100K, leave-one-out, full ranking ({json.loads((features / 'meta.json').read_text())['n_users']}"
          f" users); model {params['model']}")
    print(f"{'method':<20}" + "".join(f"{c + ' ' + m:>15}" for c in ("valid", "test") for m in ("ndcg@10", "hr@10", "mrr")))
    for name, report in rows:
        print(f"{name:<20}" + "".join(f"{report[c][m]:>15.4f}" for c in ("valid", "test")
                                       for m in ("ndcg@10", "hr@10", "mrr")))
    ratio = metrics["model"]["test"]["ndcg@10"] / metrics["baselines"]["ease"]["test"]["ndcg@10"]
    print(f"\ntransformer / EASE test NDCG@10: {ratio:.3f}x (target >= 1.15)")
    print(f"train: {metrics['epochs']} epochs, fit {metrics['train_seconds']:.1f}s wall, whole stage "
          f"{train_wall:.1f}s wall / {train_cpu:.1f}s CPU (target: fit <= 90s)")
    print(f"candidates: {cand_inner:.2f}s load + score + top-{params['candidates']['n']} for both contexts, "
          f"{cand_wall:.1f}s with interpreter start and imports (target <= 5s)")
    if args.keep:
        print(f"outputs kept in {workdir}")
    else:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
