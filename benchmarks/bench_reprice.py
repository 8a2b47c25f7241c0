"""`recmoo reprice` on a deployed project: seconds, peak RSS and the gate's verdict, without and with
service events (recmoo_dag/reprice.py).

The project is one a pipeline run left deployed (default: the ML-100K scratch project of
`bench_datasets.py`); it is copied, never changed. Two rows, each `recmoo reprice` in its own process:
1. no events: the prices re-solved from the lists the served version ranks for its known users;
2. after a simulated drift: a batch file of the service's naming in data.incoming_dir, --users
   random known users (seeded) each taking their --events-per-user best candidates, the feedback
   loop that concentrates exposure.
Each row: seconds, peak RSS, users whose candidates were recomputed, and the candidate's test
figures next to the champion's with the gate's decision.

    .venv/bin/python benchmarks/bench_reprice.py [--project /tmp/recmoo-bench/ml-100k-user_tail]
                                                 [--users 500] [--events-per-user 4] [--workdir /tmp/recmoo-reprice]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from recmoo_dag import store
from recmoo_dag.bundle import read_bundle
from recmoo_dag.config import load_params
from recmoo_dag.event_files import Event, batch_format

REPO = Path(__file__).resolve().parents[1]

RUNNER = ("import resource, sys; from recmoo_dag.cli import main; code = main(['reprice']); "
          "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")
SHOWN = ("ndcg@10", "coverage@10", "exposure_gini@10", "tail_share@10")


def copy_project(source: Path, target: Path) -> Path:
    """The project with this checkout's code (the scratch project's own copy may be older), and the
    params keys added since its params.yaml was written taken from this checkout's."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("recmoo_dag"))
    shutil.copytree(REPO / "recmoo_dag", target / "recmoo_dag", ignore=shutil.ignore_patterns("__pycache__"))
    theirs = yaml.safe_load((target / "params.yaml").read_text())
    (target / "params.yaml").write_text(yaml.safe_dump(missing_from(theirs, yaml.safe_load(
        (REPO / "params.yaml").read_text())), sort_keys=False))
    return target


def missing_from(theirs: dict, ours: dict) -> dict:
    for key, value in ours.items():
        if key not in theirs:
            theirs[key] = value
        elif isinstance(value, dict) and isinstance(theirs[key], dict):
            missing_from(theirs[key], value)
    return theirs


def drift(project: Path, n_users: int, per_user: int, seed: int) -> int:
    params = load_params(project / "params.yaml")
    bundle = read_bundle(store.version_dir(project / params.deploy.store))
    users = np.random.default_rng(seed).choice(len(bundle.user_ids), min(n_users, len(bundle.user_ids)), replace=False)
    events = [Event(str(bundle.user_ids[u]), str(bundle.item_ids[bundle.cand_items[u, j]]), 2_000_000_000 + i, None)
              for i, (u, j) in enumerate((u, j) for u in users for j in range(per_user))]
    batch_format(params.data).write(project / params.data.incoming_dir, "events-20270101-000000-000000-p1", events)
    return len(events)


def reprice(project: Path) -> dict:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER], cwd=project, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"recmoo reprice failed in {project}:\n{done.stderr[-2000:]}")
    rss = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("RSS")))
    record = store.read_decisions(project / load_params(project / "params.yaml").deploy.store)[-1]
    return {"seconds": seconds, "rss_gb": rss / 2**20, "record": record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("/tmp/recmoo-bench/ml-100k-user_tail"))
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--events-per-user", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recmoo-reprice"))
    args = parser.parse_args()
    if not (args.project / "params.yaml").is_file():
        raise SystemExit(f"{args.project}: no project here. `python benchmarks/bench_datasets.py` leaves its deployed "
                         "ML-100K project there; or pass --project, a folder where `dvc repro` deployed a version")
    store_dir = yaml.safe_load((args.project / "params.yaml").read_text())["deploy"]["store"]
    champion = store.read_manifest(args.project / store_dir)
    print(f"project {args.project}, served {champion['version']}; champion on test: "
          + ", ".join(f"{name} {champion['test']['deployed'][name]:.4f}" for name in SHOWN))
    print("| events | users moved | seconds | peak RSS GB | " + " | ".join(SHOWN) + " | NDCG ratio [95% CI] | gate |")
    print("|---" * (6 + len(SHOWN)) + "|")
    for with_events in (False, True):
        project = copy_project(args.project, args.workdir / ("drift" if with_events else "still"))
        events = drift(project, args.users, args.events_per_user, args.seed) if with_events else 0
        row = reprice(project)
        record = row["record"]
        ratio = _ratio_from(record["reason"])
        if record["promoted"]:
            shown = store.read_manifest(project / store_dir, record["served"])["test"]["ratio"]
            ratio = f"{shown['ndcg@10']:.3f}x [{shown['ndcg@10_ci'][0]:.3f}, {shown['ndcg@10_ci'][1]:.3f}]"
        figures = record["test"] or {}
        print(f"| {events} | {record['users_moved']} | {row['seconds']:.1f} | {row['rss_gb']:.2f} | "
              + " | ".join(f"{figures.get(name, float('nan')):.4f}" for name in SHOWN)
              + f" | {ratio} | {'promoted ' + record['served'] if record['promoted'] else 'kept'}: "
              + record["reason"][:120] + " |")


def _ratio_from(reason: str) -> str:
    """The NDCG ratio the gate quotes when it refuses ("ndcg@10 0.939x [0.914, 0.964]")."""
    marker = reason.find("ndcg@10 ")
    return reason[marker + 8:reason.find("]", marker) + 1] if marker >= 0 else "-"


if __name__ == "__main__":
    main()
