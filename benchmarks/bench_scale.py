"""How the pipeline scales with users: every stage's seconds and peak RSS on synthetic logs of 1k,
10k and 100k users (about 50 events each, 5k items) and on MovieLens-100K, one row per log; then the
search on a sample of valid baskets (search.baskets) against the search on all of them (ML-100K): hypervolume (also against the
full front thinned as a sample's verdict is) and the deployed policy's test figures, with the
paired standard error of NDCG@10 on the users each search saw.

Each stage runs in its own process (`recmoo <stage>`, as `dvc repro` would) in a scratch project
with the default params; peak RSS is the process's own (ru_maxrss).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 1000 10000 100000] [--skip-ml100k]
                                               [--samples 500 1000] [--workdir /tmp/recmoo-scale]
                                               [--comparison-only] [--exposure-only]

--comparison-only re-runs just the sampled-vs-full comparison on the ML-100K project an earlier run
left in the workdir (its pipeline's artifacts are reused as they are). --exposure-only times the
global exposure solve (recmoo_dag/exposure.py) alone, on synthetic candidate sets of every --sizes
(200 candidates per user from 5,000 items, Zipf-like popularity, k = 10, capacity 2x the equal share).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_datasets import STAGES

RUNNER = ("import resource, sys; from recmoo_dag.cli import main; code = main(sys.argv[1:]); "
          "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def project(root: Path, overrides: dict) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def stage(root: Path, name: str) -> tuple[float, float, str]:
    """(seconds, peak RSS GB, its summary line) of `recmoo <name>` in its own process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, name], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{root}: {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rss = int(next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RSS"))) / 1024 ** 2
    line = next((line for line in proc.stdout.splitlines() if line.startswith(f"{name}:")), "")
    return seconds, rss, line


def pipeline(label: str, root: Path) -> dict:
    row = {"log": label, "stages": {}}
    for name in STAGES:
        seconds, rss, line = stage(root, name)
        row["stages"][name] = (seconds, rss)
        print(f"  {name:<10} {seconds:7.1f}s {rss:5.2f} GB  {line[len(name) + 2:][:140]}", flush=True)
    row["users"] = json.loads((root / "metrics" / "features.json").read_text())["n_users"]
    return row


def thinned_hypervolume(root: Path) -> float:
    """Test hypervolume of the full search's front.csv thinned as a sampled search's verdict is
    (search.thin_to at search.rescore_policies, then its non-dominated part): a hypervolume of ~100
    policies is not comparable with that of thousands, so samples are compared with this."""
    import pandas as pd

    from recmoo_dag.config import load_params
    from recmoo_dag.objectives import OBJECTIVES
    from recmoo_dag.pareto import hypervolume, nondominated, thin_to
    from recmoo_dag.stages.search import yardsticks_of

    with contextlib.chdir(root):  # params hold paths relative to the project
        params = load_params(root / "params.yaml")
        valid, test = yardsticks_of(params)
        front = pd.read_csv(params.search.front)
    columns = [OBJECTIVES.index(name) for name in params.search.objectives]
    losses_valid = valid.losses(front[[f"valid_{o}" for o in OBJECTIVES]].to_numpy())[:, columns]
    losses_test = test.losses(front[[f"test_{o}" for o in OBJECTIVES]].to_numpy())[:, columns]
    kept = thin_to(losses_valid, params.search.front_epsilon, params.search.rescore_policies)
    kept = kept[nondominated(losses_valid[kept])]
    return hypervolume(losses_test[kept], params.search.reference_point)


def sampled_against_full(root: Path, samples: list[int | None]) -> list[dict]:
    """The search and deploy stages again with search.baskets at each size (None: every valid basket)."""
    rows = []
    for baskets in samples:
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["search"]["baskets"] = baskets
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        shutil.rmtree(root / params["deploy"]["store"], ignore_errors=True)
        seconds = stage(root, "search")[0]
        stage(root, "deploy")
        from recmoo_dag.results import DeployReport, SearchMetrics

        search = SearchMetrics.from_json(json.loads((root / "metrics" / "search.json").read_text()))
        deploy = DeployReport.from_json(json.loads((root / "metrics" / "deploy.json").read_text()))
        rows.append({"baskets": search.baskets_searched, "seconds": seconds, "se_searched": search.paired_se_searched,
                     "se_all": search.paired_se_all, "hv_test": search.hypervolume_test["nsga"],
                     "deployed": deploy.deployed, "accuracy_only": deploy.accuracy_only, "fallback": bool(deploy.fallback)})
        print(f"  search.baskets {baskets}: {seconds:.1f}s, HV test {rows[-1]['hv_test']:.4f}", flush=True)
    rows[-1]["hv_test_thinned"] = thinned_hypervolume(root)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument("--skip-ml100k", action="store_true")
    parser.add_argument("--samples", type=int, nargs="*", default=[500, 1000])
    parser.add_argument("--workdir", default="/tmp/recmoo-scale")
    parser.add_argument("--comparison-only", action="store_true")
    parser.add_argument("--exposure-only", action="store_true")
    args = parser.parse_args()
    work, rows = Path(args.workdir), []
    if args.exposure_only:
        print_exposure([exposure_solve(users) for users in args.sizes])
        return
    if args.comparison_only:
        if not (work / "ml-100k" / "reports" / "search" / "front.csv").exists():
            raise SystemExit(f"--comparison-only: no ML-100K project in {work}: run the benchmark without it first")
        print_comparison(sampled_against_full(work / "ml-100k", [*args.samples, None]))
        return
    for users in args.sizes:
        print(f"synthetic {users:,} users: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}", flush=True)
        root = project(work / f"synthetic-{users}", {"data": {"source": "synthetic", "synthetic": {
            "users": users, "items": 5000, "events": 50 * users, "categories": 20}}})
        rows.append(pipeline(f"synthetic {users:,}", root))
    comparison = []
    if not args.skip_ml100k:
        print(f"MovieLens-100K: load {os.getloadavg()[0]:.1f}", flush=True)
        root = project(work / "ml-100k", {})
        rows.append(pipeline("MovieLens-100K", root))
        comparison = sampled_against_full(root, [*args.samples, None])
    print_rows(rows)
    if comparison:
        print_comparison(comparison)


def exposure_solve(users: int, n_items: int = 5000, n_candidates: int = 200, k: int = 10, seed: int = 0) -> dict:
    """Seconds, peak traced memory, gap and exposure of both price solves (capacity 2x the equal share;
    floor a quarter of it, at least 1 list) on a synthetic candidate set."""
    import tracemalloc

    import numpy as np

    from recmoo_dag.exposure import capacities, floors, solve_prices, top_k_counts
    from recmoo_dag.metrics import exposure_gini_of_counts

    rng = np.random.default_rng(seed)
    weight = 1.0 / np.arange(1, n_items + 1) ** 0.9
    # Each user's candidates: n_candidates distinct items drawn by popularity without replacement
    # (Gumbel top-k, Efraimidis & Spirakis 2006), a block of users at a time.
    items = np.empty((users, n_candidates), dtype=np.int32)
    for start in range(0, users, 5000):
        keys = np.log(weight) + rng.gumbel(size=(min(5000, users - start), n_items))
        items[start:start + len(keys)] = np.argpartition(-keys, n_candidates - 1, axis=1)[:, :n_candidates] + 1
    scores = (rng.normal(size=items.shape) + 3.0 * weight[items - 1] / weight.max()).astype(np.float32)
    before, _ = top_k_counts(scores.astype(np.float64), items, np.zeros(n_items + 1), k)
    row = {"users": users}
    for kind, bounds in (("cap", {"cap": capacities(users, k, n_items, slack=2.0)}),
                         ("floor", {"floor": floors(items, n_items, np.ceil(0.25 * users * k / n_items))})):
        tracemalloc.start()
        start = time.perf_counter()
        solved = solve_prices(scores, items, k, **bounds, iterations=200, seed=seed)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        after, _ = top_k_counts(scores.astype(np.float64), items, solved.prices, k)
        row[kind] = {"seconds": seconds, "peak_gb": peak / 1e9, "gap": solved.gap, "below_floor": solved.below_floor,
                     "gini": (float(exposure_gini_of_counts(before)), float(exposure_gini_of_counts(after))),
                     "coverage": (float((before[1:] > 0).mean()), float((after[1:] > 0).mean()))}
    return row


def print_exposure(rows: list[dict]) -> None:
    print("\nexposure prices (recmoo_dag/exposure.py): 200 candidates per user, 5,000 items, k = 10, 200 iterations;"
          "\ncapacity: each item in at most 2x its equal share of the lists; floor: in at least a quarter of it (>= 1)")
    print(f"{'users':>9}{'solve':>7}{'seconds':>9}{'peak GB':>9}{'gap':>8}{'below floor':>13}"
          f"{'Gini before':>13}{'after':>7}{'coverage before':>17}{'after':>7}")
    for r in rows:
        for kind in ("cap", "floor"):
            x = r[kind]
            gap = f"{x['gap']:.2%}" if x["gap"] != float("inf") else "-"
            print(f"{r['users']:>9,}{kind:>7}{x['seconds']:>9.1f}{x['peak_gb']:>9.2f}{gap:>8}{x['below_floor']:>13}"
                  f"{x['gini'][0]:>13.3f}{x['gini'][1]:>7.3f}{x['coverage'][0]:>17.3f}{x['coverage'][1]:>7.3f}")


def print_rows(rows: list[dict]) -> None:
    header = f"{'log':<18}{'users':>8}" + "".join(f"{name:>11}" for name in STAGES) + f"{'total':>9}{'peak GB':>9}"
    print("\nseconds per stage (own process); peak RSS of the largest stage")
    print(header + "\n" + "-" * len(header))
    for row in rows:
        times = [row["stages"][name][0] for name in STAGES]
        peak = max(rss for _, rss in row["stages"].values())
        print(f"{row['log']:<18}{row['users']:>8,}" + "".join(f"{t:>11.1f}" for t in times)
              + f"{sum(times):>9.0f}{peak:>9.2f}")


def print_comparison(comparison: list[dict]) -> None:
    print("\nML-100K: the search on a sample of valid baskets vs on all of them (test window; deployed vs accuracy-only)")
    print(f"{'searched':>9}{'seconds':>9}{'SE sample':>11}{'SE all':>8}{'HV test':>9}{'vs all':>8}"
          f"{'vs thinned':>11}{'NDCG':>8}{'cov':>8}{'ILD':>8}")
    full, thinned = comparison[-1]["hv_test"], comparison[-1]["hv_test_thinned"]
    print(f"(the full search's front thinned as a sample's verdict is: HV test {thinned:.4f}; 'vs thinned' compares"
          " with it)")
    for c in comparison:
        gain = lambda key, c=c: c["deployed"][key] / c["accuracy_only"][key] - 1
        print(f"{c['baskets']:>9}{c['seconds']:>9.1f}{c['se_searched']:>11.1%}{c['se_all']:>8.1%}{c['hv_test']:>9.4f}"
              f"{c['hv_test'] / full - 1:>+8.1%}{c['hv_test'] / thinned - 1:>+11.1%}{gain('ndcg'):>+8.1%}"
              f"{gain('coverage'):>+8.1%}{gain('ild'):>+8.1%}" + ("  (fallback)" if c["fallback"] else ""))


if __name__ == "__main__":
    main()
