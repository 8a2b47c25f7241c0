"""How the deploy stage's choice behaves from valid to test, per rule and bounds: a table.

Every front policy (reports/search/front.csv of the last `dvc repro`) is scored on valid and test
once; each (rule, ILD bound, confidence) row then runs `decision.choose` on valid, exactly as the
deploy stage does, and prints the chosen policy's gains over the accuracy-only lists on both.
The spread of the test NDCG@10 between rows that tie on valid is the noise the defaults must live
with (~1k users).

    .venv/bin/python benchmarks/bench_decision.py [--params params.yaml]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from recmoo_dag.config import load_params
from recmoo_dag.decision import choose, feasible, ndcg_lower_bound
from recmoo_dag.deploy import clamp_pools, measure
from recmoo_dag.front import read_front
from recmoo_dag.policy import accuracy_only_policy
from recmoo_dag.stages.search import yardsticks_of

RULES = ("constrained", "asf", "pseudo_weights", "knee")
ILD_BOUNDS = (1.0, 1.05, 1.1)
CONFIDENCES = (0.5, 0.7, 0.95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # pymoo's mcdm imports scipy's ckdtree
    params = load_params(args.params)
    cfg = params.deploy
    valid, test = yardsticks_of(params)
    k = params.policy.k
    front = clamp_pools(read_front(params.search.front), k, valid.requests.n_candidates)
    baseline = accuracy_only_policy(k)
    valid_f, test_f = measure(valid, front), measure(test, front)
    valid_ref, test_ref = measure(valid, baseline)[0], measure(test, baseline)[0]
    user_gains, accuracy_only_gains = valid.user_ndcg(front), valid.user_ndcg(baseline)[0]
    difference = user_gains - accuracy_only_gains
    paired_se = difference.std(axis=1, ddof=1).mean() / np.sqrt(difference.shape[1]) / valid_ref[0]
    print(f"{len(front)} front policies; paired SE of an NDCG@10 difference on valid: {paired_se:.1%} "
          f"of accuracy-only NDCG@10 ({difference.shape[1]} users)")
    print("gains vs accuracy-only; chosen on valid, then measured on test")
    header = (f"{'rule':15s} {'ILD >=':>6s} {'conf':>5s} {'feasible':>8s} | {'valid NDCG':>10s} {'ILD':>7s} {'cov':>7s} | "
              f"{'test NDCG':>9s} {'ILD':>7s} {'cov':>7s} {'novelty':>7s} {'pers.':>6s}")
    print(header)
    print("-" * len(header))
    for rule in RULES:
        for ild in ILD_BOUNDS:
            for confidence in CONFIDENCES:
                lower = ndcg_lower_bound(user_gains, accuracy_only_gains, confidence) if confidence > 0.5 else None
                bounds = {"ndcg": cfg.min_ratio.get("ndcg", 0.98), "ild": ild}
                index, _ = choose(rule, valid_f, valid_ref, bounds, cfg.maximize, cfg.weights, k, lower)
                if index is None:
                    print(f"{rule:15s} {ild:6.2f} {confidence:5.2f} {0:8d} | no policy meets the bounds")
                    continue
                n_feasible = int(feasible(valid_f, valid_ref, bounds, lower).sum())
                gain_valid, gain_test = valid_f[index] / valid_ref - 1, test_f[index] / test_ref - 1
                print(f"{rule:15s} {ild:6.2f} {confidence:5.2f} {n_feasible:8d} | {gain_valid[0]:+10.1%} "
                      f"{gain_valid[1]:+7.1%} {gain_valid[3]:+7.1%} | {gain_test[0]:+9.1%} {gain_test[1]:+7.1%} "
                      f"{gain_test[3]:+7.1%} {gain_test[2]:+7.1%} {gain_test[4]:+6.1%}")  # JUDGED order: cov is 3


if __name__ == "__main__":
    main()
