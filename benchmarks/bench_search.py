"""Benchmark of the re-ranker and the Pareto search on the project's data (MovieLens-100K by default).

    python benchmarks/bench_search.py                   # throughput table + the full search study
    python benchmarks/bench_search.py --skip-search     # throughput only (seconds)
    python benchmarks/bench_search.py --fit-latency     # measure one-request latency, fit a + b * pool
    python benchmarks/bench_search.py --candidates PATH # another candidates.npz than params' candidates.path
    python benchmarks/bench_search.py --ablate exposure_cap exposure_floor  # NSGA with and without these terms, same budget

Throughput is measured at the issue's reference point: all validation users, pool 100, k = 10, the
full policy (genre diversity penalty + novelty + calibration + debias) with random weights. Timings on a shared
machine are noisy: the table prints the load average, the best of 3 runs and CPU time next to wall
time. The latency fit feeds policy.latency_intercept_ms / latency_per_candidate_ms in params.yaml.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recmoo_dag.config import load_params
from recmoo_dag.front import best_within, front_table
from recmoo_dag.objectives import OBJECTIVES
from recmoo_dag.pareto import hypervolume, nondominated
from recmoo_dag.policy import (
    CALIBRATION,
    DEBIAS,
    DITHER,
    DIVERSITY,
    EXPOSURE_CAP,
    EXPOSURE_FLOOR,
    NOVELTY,
    POOL,
    TEMPERATURE,
    Requests,
    accuracy_only_policy,
    rerank,
)
from recmoo_dag.results import METHODS
from recmoo_dag.search import SWITCHABLE, bounds, random_policies, run_nsga, search
from recmoo_dag.stages.search import yardsticks_of

POOLS = (10, 25, 50, 75, 100, 150, 200)


def best_of(fn, repeats: int = 3) -> tuple[float, float]:
    """(wall, cpu) seconds of the fastest of `repeats` calls."""
    runs = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(runs)


def throughput(valid, n_policies: int = 256) -> list[tuple[str, float, float]]:
    low, high = bounds(valid.k, valid.requests.n_candidates)
    policies = random_policies(n_policies, low, high, seed=0)
    policies[:, POOL] = min(100, valid.requests.n_candidates)
    rows = []
    for threads in (1, 2):
        yard = dataclasses.replace(valid, threads=threads)
        yard.objectives(policies[:4])  # similarity block, groups: built once per context
        wall, cpu = best_of(lambda yard=yard, threads=threads: rerank(yard.requests, policies, yard.k, threads))
        rows.append((f"rerank only, {threads} thread(s)", n_policies / wall, n_policies / cpu))
        wall, cpu = best_of(lambda yard=yard: yard.objectives(policies))
        rows.append((f"rerank + 6 objectives, {threads} thread(s)", n_policies / wall, n_policies / cpu))
    return rows


def fit_latency(valid, n_users: int = 100, repeats: int = 5) -> tuple[float, float, list]:
    """Latency (ms) of one request (one user, one policy) per pool: the median over users of each
    user's fastest of `repeats` runs; and the least-squares line a + b * pool through them."""
    policy = accuracy_only_policy(valid.k)
    policy[[TEMPERATURE, DEBIAS, EXPOSURE_CAP, EXPOSURE_FLOOR, NOVELTY, CALIBRATION, DITHER, DIVERSITY]] = [
        0.3, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]  # every term
    requests, measured = valid.requests, []
    for pool in (p for p in POOLS if p <= requests.n_candidates):
        x = policy.copy()
        x[POOL] = pool
        per_user = []
        for u in range(min(n_users, requests.n_requests)):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()  # a request: its candidates' terms -> context -> list
                one = Requests(*(getattr(requests, name)[u:u + 1, :pool] for name in (
                    "items", "logits", "log_pop", "price_cap", "price_floor", "novelty", "fit", "dither")),
                               requests.item_sim)
                rerank(one, x, valid.k)
                times.append(time.perf_counter() - start)
            per_user.append(min(times))  # the fastest repeat: what the code costs, not the neighbours
        measured.append((pool, 1000 * float(np.median(per_user))))
    pools, ms = np.array(measured).T
    slope, intercept = np.polyfit(pools, ms, 1)
    return float(intercept), float(slope), measured


def study(valid, test, params, n_evals: int) -> None:
    cfg = params.search
    start = time.perf_counter()
    result = search(valid, test, cfg.objectives, cfg.algorithm, cfg.pop_size, ("n_eval", n_evals),
                    cfg.reference_point, cfg.mmr_pool, params.seed)
    total = time.perf_counter() - start
    hv, hv_test = result.hypervolume, result.hypervolume_test
    print(f"\nsearch: {result.n_evals} NSGA evaluations in {result.seconds:.1f} s "
          f"({result.n_evals / result.seconds:.0f} evals/s); whole study with baselines and test "
          f"re-evaluation {total:.0f} s")
    print(f"{'method':<12}{'front':>8}{'HV valid':>11}{'HV test':>10}{'NSGA/x valid':>14}{'NSGA/x test':>13}")
    for method in METHODS:
        print(f"{method:<12}{len(result.fronts[method].x):>8}{hv[method]:>11.4f}{hv_test[method]:>10.4f}"
              f"{hv['nsga'] / hv[method]:>14.3f}{hv_test['nsga'] / hv_test[method]:>13.3f}")
    acc = result.accuracy_only
    nsga = result.fronts["nsga"]
    table = front_table(nsga.x, {"valid": nsga.valid, "test": nsga.test}, nsga.ndcg_ratio,
                        {"valid": valid.catalogue(nsga.x), "test": test.catalogue(nsga.x)})
    best = best_within(table, acc["valid"], 0.98, valid.k)
    print(f"\naccuracy-only (model top-{valid.k}): valid NDCG {acc['valid'][0]:.4f}, coverage {acc['valid'][3]:.3f}; "
          f"test NDCG {acc['test'][0]:.4f}, coverage {acc['test'][3]:.3f}")
    if best["found"]:
        print(f"best front policy within 2% of its valid NDCG: NDCG ratio {best['valid_ndcg_ratio']:.3f}, "
              f"coverage {best['valid_coverage_gain']:+.1%} on valid; on test NDCG {best['test_ndcg']:.4f}, "
              f"coverage {best['test_coverage']:.3f}\n  policy {best['policy']}")
    else:
        print("no front policy within 2% of the accuracy-only NDCG")


ABLATION_FLOORS = (-0.02, -0.05, -0.10, -0.20)  # NDCG@10 change vs accuracy-only, on valid


def ablation(valid, test, params, n_evals: int, variables: list[str]) -> None:
    """The same NSGA run (budget, seed) over the full policy and with some variables' terms switched
    off (held at 0 by the search's box, search.bounds): for each NDCG@10 floor, the front policy with the
    most coverage on valid, and what it gives on test; each front's hypervolume on valid and on test
    (the same normalization for both runs: each window's accuracy-only policy)."""
    cfg = params.search
    columns = [OBJECTIVES.index(name) for name in cfg.objectives]
    named = " + ".join(variables)
    print(f"\nablation of {named}: NSGA, {n_evals} evaluations each; per valid NDCG@10 floor, the front "
          "policy with the most valid coverage")
    print(f"{'policy class':<40}{'front':>7}{'floor':>7}{'valid cov':>11}{'test NDCG':>11}{'test cov':>10}"
          f"{'test ILD':>10}{'HV valid':>10}{'HV test':>9}")
    for label, off in (("full", ()), (f"without {named}", tuple(variables))):
        low, high = bounds(valid.k, valid.requests.n_candidates, switched_off=off)
        x, natural = run_nsga(valid.objectives, valid.losses, columns, low, high, cfg.algorithm, cfg.pop_size,
                              ("n_eval", n_evals), params.seed)
        front = x[nondominated(valid.losses(natural)[:, columns])]
        gain_valid = valid.objectives(front) / valid.accuracy_only - 1
        gain_test = test.objectives(front) / test.accuracy_only - 1
        volume = hypervolume(valid.losses(valid.objectives(front))[:, columns], cfg.reference_point)
        on_test = test.losses(test.objectives(front))[:, columns]
        volume_test = hypervolume(on_test[nondominated(on_test)], cfg.reference_point)
        for floor in ABLATION_FLOORS:
            ok = np.flatnonzero(gain_valid[:, 0] >= floor)
            if not len(ok):
                print(f"{label:<40}{len(front):>7}{floor:>+7.0%}   no policy")
                continue
            i = ok[np.argmax(gain_valid[ok, 3])]
            print(f"{label:<40}{len(front):>7}{floor:>+7.0%}{gain_valid[i, 3]:>+11.1%}{gain_test[i, 0]:>+11.1%}"
                  f"{gain_test[i, 3]:>+10.1%}{gain_test[i, 1]:>+10.1%}{volume:>10.4f}{volume_test:>9.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--candidates", help="candidates.npz to use instead of params' candidates.path")
    parser.add_argument("--evals", type=int, help="search budget (default: search.n_evals)")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--fit-latency", action="store_true")
    parser.add_argument("--ablate", nargs="+", choices=SWITCHABLE,
                        help="compare NSGA with and without these variables' terms (held at 0, which switches "
                             "each off) instead of the study")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.candidates:
        params = params.model_copy(update={"candidates": params.candidates.model_copy(update={"path": args.candidates})})
    valid, test = yardsticks_of(params)
    print(f"data: {valid.requests.n_requests} users, {valid.n_items} items, {valid.requests.n_candidates} candidates; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (timings are best of 3)")
    if args.fit_latency:
        intercept, slope, measured = fit_latency(valid)
        for pool, ms in measured:
            print(f"  pool {pool:>4}: {ms:.3f} ms   (fit {intercept + slope * pool:.3f})")
        print(f"policy:\n  latency_intercept_ms: {intercept:.4f}\n  latency_per_candidate_ms: {slope:.6f}")
        return
    print(f"\n{'throughput at pool 100, k = ' + str(valid.k):<44}{'evals/s wall':>14}{'evals/s CPU':>13}")
    for name, wall, cpu in throughput(valid):
        print(f"{name:<44}{wall:>14.0f}{cpu:>13.0f}")
    if args.ablate:
        ablation(valid, test, params, args.evals or params.search.n_evals, args.ablate)
    elif not args.skip_search:
        study(valid, test, params, args.evals or params.search.n_evals)


if __name__ == "__main__":
    main()
