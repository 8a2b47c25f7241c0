"""Error rates of the decisions, measured by resampling users: two tables.

Run after `make pipeline` (or `dvc repro`) on the log of params.yaml; reads its features, candidates
and front, and decides as the deploy stage does on its first split of the valid users
(choice.choose_policy on front.csv alone, the gate's bounds; `deploy.splits` retries aside).

1. The gate's NDCG@k non-inferiority test (lower confidence bound of served / accuracy-only >= the
   bound, `deploy.min_ratio.ndcg`, at `deploy.confidence`, paired bootstrap over users). A real front
   policy's per-user test NDCG@k (the deploy stage's choice, else the front's policy nearest to
   accuracy-only) is rescaled so that its population ratio to accuracy-only is exactly 0.95 ("truly
   5 % worse") or 1.00 ("truly equal"); each trial draws a new test population of the same size
   with replacement from the test users and runs the test on it. Targets: promotes the 0.95 policy
   in <= 10 % of trials, the 1.00 policy in >= 80 %.
2. The optimism of the choice: each trial draws a sample of the valid users (`--valid-share`) and
   runs the rule on it, with the selection/confirmation split (`deploy.confirm_share`) and without it
   (the rule ranks and confirms on the same users); the chosen policy's valid NDCG ratio (what the
   choice reports) minus its test ratio (what the users get) is the optimism. The trials split their
   sample anew, so their confirmation users include some the front was searched on: the search's own
   optimism is in this figure too; table 3 separates it.
3. With `--search`: what the search's own choice does to the confirmation users. The search runs
   twice with the stage's settings, its front found on every valid user (as before 2026-12-06) and on
   the selection users alone (the stage now); for each front, the median over its policies of the
   NDCG@k ratio to accuracy-only on the selection users, the confirmation users and test, and how many
   policies pass the NDCG bound on the confirmation users and then on test. Two searches: minutes.
4. With `--ablate NAME ...`: what a policy variable does to the verdict. For each NSGA seed of
   `--seeds`, the search with the stage's settings on the selection users, with the variables and
   with them held at 0, then the rule and the gate as the deploy stage runs them on an empty store:
   served or fallback, and the served policy's test ratios to accuracy-only with their intervals.
   Two searches per seed: a minute each on ML-100K.

5. With `--front` (alone): table 3's figures for the search stage's own front (front.csv), without
   searching again: the shift between the confirmation users and test that the gate meets, in seconds.
6. With `--terms` (alone): which term of the rule's pick the shift comes from. The deploy stage's
   choice on the stage's front, then the same policy with each of its terms at 0 in turn (keep_head
   at 0 too; the pool stays): NDCG@k ratio to accuracy-only with its interval on the selection users,
   the confirmation users and test, and ILD@k's ratio on test.
7. With `--crossfit` (alone): the rule with the halves' roles swapped, and what any rule could
   serve. The search runs again, its front found on the confirmation users; the rule then runs on
   each front as the stage runs it on its own, ranked on the users it was found on and confirmed on
   the others, and the gate judges each pick on an empty store. The ceiling: of both fronts'
   policies, how many meet every bound of the gate on test (what a rule that could see test would
   serve) and the largest coverage@k ratio among them. A minute's search.
8. With `--splits SEED ...` (alone): the verdict on other splits of the valid users, everything else
   held (the search's seed, the model, the candidates). For each seed, the users are
   split anew (`Yardstick.split_for_confirmation` with that seed), the search finds a front on the
   new selection users, the rule ranks it there and confirms on the others, and the gate judges the
   pick on an empty store; the stage's own split (front.csv) comes first. A minute's search a seed.

    .venv/bin/python benchmarks/bench_decision.py [--params params.yaml] [--trials 200] [--choices 20] [--search]
                                                  [--ablate keep_head [--seeds 42 43 44]] [--front] [--terms]
                                                  [--crossfit] [--splits 1 2]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np

from recmoo_dag.choice import choose_between, choose_policy, clamp_pools, figures, lower_bounds
from recmoo_dag.config import load_params
from recmoo_dag.deploy import judge
from recmoo_dag.features import load_features
from recmoo_dag.front import read_front
from recmoo_dag.objectives import JUDGED
from recmoo_dag.policy import VARIABLE_NAMES, accuracy_only_policy
from recmoo_dag.search import SWITCHABLE
from recmoo_dag.stages.search import search_as_configured, yardsticks_of
from recmoo_dag.uncertainty import Bootstrap, ratio

COVERAGE_TARGET = 1.15  # issue 22: the served policy's coverage@k at least 15 % above accuracy-only's


def stage_front(params, valid) -> np.ndarray:
    """The search stage's front (front.csv), its pools clamped to the candidates there are: (P, d)."""
    return clamp_pools(read_front(params.search.front), params.policy.k, valid.requests.n_candidates)


def one_split(deploy):
    """The deploy rule on its first split alone (front.csv), as every table here judges it."""
    return deploy.model_copy(update={"splits": 1})


def front_found_on(params, users, test, features, switched_off: tuple[str, ...] = ()) -> np.ndarray:
    """NSGA's front with the stage's settings (params.search, params.seed), found on `users`' valid
    baskets, its pools clamped: (P, d)."""
    result = search_as_configured(params, users, test, features, switched_off=switched_off)
    return clamp_pools(result.fronts["nsga"].x, params.policy.k, users.requests.n_candidates)


def gate_promotes(policy_users: np.ndarray, accuracy_users: np.ndarray, bound: float, confidence: float,
                  replicates: int, seed: int) -> bool:
    """The gate's NDCG test on one population of users: (U,), (U,) per-user NDCG."""
    boot = Bootstrap(len(policy_users), replicates, seed)
    return bool(boot.ratio_lower(policy_users, accuracy_users, confidence) >= bound)


def gate_error_rates(policy_users: np.ndarray, accuracy_users: np.ndarray, truths: tuple[float, ...], bound: float,
                     confidence: float, replicates: int, trials: int, seed: int) -> dict[float, float]:
    """How often the gate promotes a policy whose population ratio is each of `truths`."""
    rng = np.random.default_rng(seed)
    population = policy_users.mean() / accuracy_users.mean()
    rates = {}
    for truth in truths:
        scaled = policy_users * (truth / population)  # the real policy's per-user spread, at the true ratio
        promoted = 0
        for trial in range(trials):
            drawn = rng.integers(0, len(scaled), len(scaled))
            promoted += gate_promotes(scaled[drawn], accuracy_users[drawn], bound, confidence, replicates, seed + trial)
        rates[truth] = promoted / trials
    return rates


def optimism(front: np.ndarray, valid, test, cfg, k: int, evaluation, trials: int, share: float,
             seed: int) -> dict[str, list[tuple[float, float]]]:
    """Per trial and variant: the chosen policy's valid NDCG@k and coverage@k ratios as the choice
    reports them, and its test ratios: (valid ndcg, test ndcg, valid coverage, test coverage)."""
    accuracy_test = figures(test, accuracy_only_policy(k), Bootstrap(len(test.user_index[0]), 2, seed),
                            evaluation.level).values
    n_users = len(valid.user_index[0])
    out = {"selection/confirmation split": [], "no split": []}
    for trial in range(trials):
        sample = valid.of_users(np.flatnonzero(np.random.default_rng([seed, trial]).random(n_users) < share))
        for variant, confirm_share in (("selection/confirmation split", cfg.confirm_share), ("no split", 0.0)):
            rule = one_split(cfg).model_copy(update={"confirm_share": confirm_share})
            choice = choose_policy([front], sample, rule, k, evaluation, seed + trial)
            if choice.policy is None:
                continue
            tested = figures(test, choice.policy, Bootstrap(len(test.user_index[0]), 2, seed), evaluation.level)
            out[variant].append(tuple(value for name in ("ndcg", "coverage") for value in (
                choice.confirmed[name].value, float(ratio(tested.values[name], accuracy_test[name])))))
    return out


def front_shift_header(bound: float) -> None:
    print(f"{'front':<16} | {'size':>5} | {'selection':>9} | {'confirmation':>12} | {'test':>6} | "
          f"{'confirmation - test':>19} | passing {bound:g} on confirmation -> on test")
    print("-" * 118)


def front_shift_row(name: str, front: np.ndarray, params, selection, confirmation, test) -> None:
    """One front's median NDCG@k ratio to accuracy-only on the selection users, the confirmation
    users and test; the median of confirmation - test over its policies (the shift the gate meets);
    how many policies meet the NDCG bound on the confirmation users, and how many of those on test."""
    deploy = params.deploy
    bound = deploy.min_ratio["ndcg"]
    ratios, lower = {}, {}
    for window, yard in (("selection", selection), ("confirmation", confirmation), ("test", test)):
        ratios[window] = yard.objectives(front)[:, 0] / yard.accuracy_only[0]
        boot = Bootstrap(len(yard.user_index[0]), params.evaluation.replicates, params.seed + 1)
        lower[window] = lower_bounds(yard, front, ["ndcg"], boot, deploy.confidence)["ndcg"]
    passing = lower["confirmation"] >= bound
    print(f"{name:<16} | {len(front):>5} | {np.median(ratios['selection']):>9.4f} | "
          f"{np.median(ratios['confirmation']):>12.4f} | {np.median(ratios['test']):>6.4f} | "
          f"{np.median(ratios['confirmation'] - ratios['test']):>+19.4f} | "
          f"{passing.sum()} -> {(lower['test'][passing] >= bound).sum()}")


def search_contamination(params, valid, test) -> None:
    """Table 3: the front searched on every valid user vs on the selection users alone."""
    deploy, k = params.deploy, params.policy.k
    selection, confirmation = valid.split_for_confirmation(deploy.confirm_share, params.seed)
    features = load_features(params.features.dir)
    print(f"\n3. the front searched on every valid user vs on the {len(selection.user_index[0])} selection users "
          f"alone; median over the front of the NDCG@{k} ratio to accuracy-only")
    front_shift_header(deploy.min_ratio["ndcg"])
    for name, searched in (("every user", valid), ("selection users", selection)):
        front_shift_row(name, front_found_on(params, searched, test, features), params, selection, confirmation, test)


def stage_front_shift(params, valid, test) -> None:
    """Table 5: table 3's row for the search stage's own front (front.csv), without searching again."""
    deploy, k = params.deploy, params.policy.k
    selection, confirmation = valid.split_for_confirmation(deploy.confirm_share, params.seed)
    print(f"\n5. the search stage's front ({params.search.front}); median over it of the NDCG@{k} ratio to "
          f"accuracy-only on the {len(selection.user_index[0])} selection users, the "
          f"{len(confirmation.user_index[0])} confirmation users and the {len(test.user_index[0])} test users")
    front_shift_header(deploy.min_ratio["ndcg"])
    front_shift_row("front.csv", stage_front(params, valid), params, selection, confirmation, test)


def term_costs(params, valid, test) -> None:
    """Table 6: the rule's pick with each of its terms off in turn, on each window's users."""
    deploy, k, evaluation = params.deploy, params.policy.k, params.evaluation
    selection, confirmation = valid.split_for_confirmation(deploy.confirm_share, params.seed)
    choice = choose_policy([stage_front(params, valid)], valid, one_split(deploy), k, evaluation, params.seed)
    if choice.policy is None:
        print(f"\n6. no pick to take apart: {choice.reason}")
        return
    variants = [("the pick", choice.policy)]
    for index, name in enumerate(VARIABLE_NAMES):
        if name != "pool" and choice.policy[index] != 0:
            off = choice.policy.copy()
            off[index] = 0.0
            variants.append((f"{name} off", off))
    windows = {"selection": selection, "confirmation": confirmation, "test": test}
    boots = {window: Bootstrap(len(yard.user_index[0]), evaluation.replicates, params.seed + i)
             for i, (window, yard) in enumerate(windows.items())}
    baselines = {window: figures(yard, accuracy_only_policy(k), boots[window], evaluation.level)
                 for window, yard in windows.items()}
    print(f"\n6. the rule's pick with each term off: NDCG@{k} ratio to accuracy-only "
          f"[{evaluation.level:.0%} interval] on each window's users, ILD@{k}'s on test")
    print(f"{'policy':<26} | " + " | ".join(f"{w + f' ({len(y.user_index[0])})':<22}" for w, y in windows.items())
          + f" | {'ILD@' + str(k) + ' test':>9}")
    print("-" * 112)
    for label, policy in variants:
        cells, ild = [], None
        for window, yard in windows.items():
            r = figures(yard, policy, boots[window], evaluation.level).ratios(baselines[window], evaluation.level,
                                                                             deploy.confidence)
            cells.append(f"{r['ndcg'].value:.3f} [{r['ndcg'].low:.3f}, {r['ndcg'].high:.3f}]")
            ild = r["ild"].value
        print(f"{label:<26} | " + " | ".join(f"{cell:<22}" for cell in cells) + f" | {ild:>8.3f}x")


def ablation_verdicts(params, valid, test, names: tuple[str, ...], seeds: list[int]) -> None:
    """Table 4: served or not, and the served policy's test ratios, with and without `names`."""
    deploy, k = params.deploy, params.policy.k
    selection, _ = valid.split_for_confirmation(deploy.confirm_share, params.seed)
    features = load_features(params.features.dir)
    named = " + ".join(names)
    print(f"\n4. the verdict with and without {named}: search on the selection users (NSGA seed as shown), "
          f"rule and gate on an empty store; test ratios to accuracy-only [{params.evaluation.level:.0%} interval]")
    print(f"{'seed':>5} | {'policy class':<24} | {'served':<9} | {named:>9} | {'NDCG@' + str(k):<20} | "
          f"{'coverage@' + str(k):>11} | {'ILD@' + str(k):>7}")
    print("-" * 104)
    served = {}
    for seed in seeds:
        for label, off in (("full", ()), (f"without {named}", names)):
            front = front_found_on(params.model_copy(update={"seed": seed}), selection, test, features, off)
            choice = choose_policy([front], valid, one_split(deploy), k, params.evaluation, params.seed)
            verdict = judge(choice, test, None, None, {}, deploy, k, params.evaluation, params.seed)
            ok = verdict.fallback is None and verdict.decision.promoted
            served[label] = served.get(label, 0) + ok
            if choice.policy is None:  # nothing met the bounds on valid (selection or confirmation users)
                print(f"{seed:>5} | {label:<24} | {'fallback':<9} | {'':>9} | {'none chosen on valid':<20} |")
                continue
            r = verdict.candidate.ratios(verdict.accuracy_only, params.evaluation.level, deploy.confidence)
            values = "/".join(f"{choice.policy[VARIABLE_NAMES.index(name)]:g}" for name in names)
            outcome = "re-ranked" if ok else "gate: no"  # the gate's figures of the chosen policy either way
            print(f"{seed:>5} | {label:<24} | {outcome:<9} | {values:>9} | "
                  f"{r['ndcg'].value:.3f} [{r['ndcg'].low:.3f}, {r['ndcg'].high:.3f}] | {r['coverage'].value:>10.3f}x | "
                  f"{r['ild'].value:>6.3f}x")
    print("served a re-ranked policy: " + ", ".join(f"{label} {n} of {len(seeds)}" for label, n in served.items()))


def verdict_header(label: str, k: int) -> None:
    print(f"{label:<22} | {'served':<9} | {'NDCG@' + str(k):<20} | {'coverage@' + str(k):>11} | {'ILD@' + str(k):>7}")
    print("-" * 84)


def verdict_row(label: str, choice, params, test) -> bool:
    """One row of tables 7 and 8: the pick's verdict on an empty store and its test ratios; served or not."""
    deploy, k, evaluation = params.deploy, params.policy.k, params.evaluation
    if choice.policy is None:
        print(f"{label:<22} | {'fallback':<9} | none chosen on valid")
        return False
    verdict = judge(choice, test, None, None, {}, deploy, k, evaluation, params.seed)
    served = verdict.fallback is None and verdict.decision.promoted
    r = verdict.candidate.ratios(verdict.accuracy_only, evaluation.level, deploy.confidence)
    print(f"{label:<22} | {'re-ranked' if served else 'gate: no':<9} | "
          f"{r['ndcg'].value:.3f} [{r['ndcg'].low:.3f}, {r['ndcg'].high:.3f}] | {r['coverage'].value:>10.3f}x | "
          f"{r['ild'].value:>6.3f}x")
    return served


def crossfit_ceiling(params, valid, test) -> None:
    """Table 7: the rule on each half's own front, and the test window's ceiling over both fronts."""
    deploy, k, evaluation = params.deploy, params.policy.k, params.evaluation
    halves = dict(zip(("selection", "confirmation"), valid.split_for_confirmation(deploy.confirm_share, params.seed)))
    fronts = {"selection": stage_front(params, valid),
              "confirmation": front_found_on(params, halves["confirmation"], test, load_features(params.features.dir))}
    print(f"\n7. each half's own front, ranked on the users it was found on and confirmed on the other half; "
          f"gate on an empty store, test ratios to accuracy-only [{evaluation.level:.0%} interval]")
    verdict_header("front found on (size)", k)
    for searched_on, other in (("selection", "confirmation"), ("confirmation", "selection")):
        verdict_row(f"{searched_on} ({len(fronts[searched_on])})",
                    choose_between(fronts[searched_on], halves[searched_on], halves[other], deploy, k, evaluation,
                                   params.seed), params, test)
    pool = np.vstack(list(fronts.values()))
    lower = lower_bounds(test, pool, list(deploy.min_ratio), Bootstrap(len(test.user_index[0]), evaluation.replicates,
                                                                       params.seed), deploy.confidence)
    passing = np.all([lower[name] >= bound for name, bound in deploy.min_ratio.items()], axis=0)
    coverage = JUDGED.index("coverage")
    gain = test.objectives(pool)[:, coverage] / test.accuracy_only[coverage]
    best = f"{gain[passing].max():.3f}x" if passing.any() else "-"
    print(f"ceiling on test: {passing.sum()} of the {len(pool)} policies meet every bound of the gate; the largest "
          f"coverage@{k} among them {best}; {(passing & (gain >= COVERAGE_TARGET)).sum()} of them at coverage "
          f">= {COVERAGE_TARGET:g}x")


def split_verdicts(params, valid, test, seeds: list[int]) -> None:
    """Table 8: the verdict on other splits of the valid users, the search's seed held."""
    deploy, k, evaluation = params.deploy, params.policy.k, params.evaluation
    features = load_features(params.features.dir)
    print(f"\n8. the valid users split anew, the search's seed ({params.seed}) held: search and rule on each split, "
          f"gate on an empty store; test ratios to accuracy-only [{evaluation.level:.0%} interval]")
    verdict_header("split", k)
    first = choose_policy([stage_front(params, valid)], valid, one_split(deploy), k, evaluation, params.seed)
    served = verdict_row("the stage's", first, params, test)
    for seed in seeds:
        selection, confirmation = valid.split_for_confirmation(deploy.confirm_share, seed)
        front = front_found_on(params, selection, test, features)
        served += verdict_row(f"seed {seed}", choose_between(front, selection, confirmation, deploy, k, evaluation,
                                                            params.seed), params, test)
    print(f"served a re-ranked policy on {served} of {len(seeds) + 1} splits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--trials", type=int, default=200, help="resampled test populations per true ratio")
    parser.add_argument("--choices", type=int, default=20, help="resampled valid samples the rule chooses on")
    parser.add_argument("--valid-share", type=float, default=0.8)
    parser.add_argument("--replicates", type=int, default=None, help="bootstrap replicates (evaluation.replicates)")
    parser.add_argument("--search", action="store_true", help="table 3: the search's own choice and the confirmation users")
    parser.add_argument("--front", action="store_true", help="table 5 alone: table 3's figures for the stage's front.csv")
    parser.add_argument("--terms", action="store_true", help="table 6 alone: the rule's pick with each term off")
    parser.add_argument("--crossfit", action="store_true",
                        help="table 7 alone: the rule with the halves swapped, and the test window's ceiling")
    parser.add_argument("--splits", nargs="+", type=int, default=[], metavar="SEED",
                        help="table 8 alone: the verdict on other splits of the valid users, seeded so")
    parser.add_argument("--ablate", nargs="+", choices=SWITCHABLE,
                        help="table 4 only: the verdict with and without these variables")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44], help="NSGA seeds of table 4")
    args = parser.parse_args()
    warnings.simplefilter("ignore", DeprecationWarning)  # pymoo's mcdm imports scipy's ckdtree
    params = load_params(args.params)
    cfg, k, seed = params.deploy, params.policy.k, params.seed
    evaluation = params.evaluation.model_copy(update={"replicates": args.replicates or params.evaluation.replicates})
    valid, test = yardsticks_of(params)
    if args.ablate:
        ablation_verdicts(params, valid, test, tuple(args.ablate), args.seeds)
        return
    if args.front:
        stage_front_shift(params, valid, test)
        return
    if args.terms:
        term_costs(params, valid, test)
        return
    if args.crossfit:
        crossfit_ceiling(params, valid, test)
        return
    if args.splits:
        split_verdicts(params, valid, test, args.splits)
        return
    front = stage_front(params, valid)

    choice = choose_policy([front], valid, one_split(cfg), k, evaluation, seed)
    policy = choice.policy
    if policy is None:  # nothing qualified: the front's policy nearest to accuracy-only on valid NDCG
        policy = front[np.argmax(valid.objectives(front)[:, 0])]
    users = test.user_ndcg(np.vstack([policy, accuracy_only_policy(k)]))  # (2, U)
    keep = ~np.isnan(users).any(axis=0)
    policy_users, accuracy_users = users[0, keep], users[1, keep]
    bound = cfg.min_ratio["ndcg"]
    difference = policy_users / accuracy_users.mean() - accuracy_users / accuracy_users.mean()
    print(f"{params.features.split} windows: {len(valid.user_index[0])} valid users, {len(policy_users)} test users "
          f"({test.cases.n_cases} baskets); the policy's test NDCG@{k} ratio "
          f"{policy_users.mean() / accuracy_users.mean():.3f}, paired SE of the ratio "
          f"{difference.std(ddof=1) / np.sqrt(len(difference)):.2%}")
    rates = gate_error_rates(policy_users, accuracy_users, tuple(sorted({0.95, bound, 0.98, 1.00})), bound, cfg.confidence,
                             evaluation.replicates, args.trials, seed)
    print(f"\n1. the gate's NDCG@{k} test (lower {cfg.confidence:.0%} bound of the ratio >= {bound:g}), "
          f"{args.trials} resampled test populations each")
    print(f"{'true ratio':>10} | {'promoted':>8} | target")
    print("-" * 34)
    targets = {0.95: "<= 10%", bound: "~ 1 - confidence (the test's size)", 1.00: ">= 80%"}
    for truth, rate in rates.items():
        print(f"{truth:>10.2f} | {rate:>8.1%} | {targets.get(truth, '')}")

    results = optimism(front, valid, test, cfg, k, evaluation, args.choices, args.valid_share, seed)
    print(f"\n2. optimism of the chosen policy's ratios to accuracy-only: as the choice reports them (valid) minus "
          f"on test; {args.choices} samples of {args.valid_share:.0%} of the valid users")
    print(f"{'variant':<30} | {'chosen':>6} | {'objective':<11} | {'valid ratio':>11} | {'test ratio':>10} | "
          f"{'optimism':>24}")
    print("-" * 110)
    for variant, rows in results.items():
        if not rows:
            print(f"{variant:<30} | {0:>6} | no policy qualified")
            continue
        values = np.array(rows)  # (T, 4)
        for j, name in enumerate((f"ndcg@{k}", f"coverage@{k}")):
            reported, tested = values[:, 2 * j], values[:, 2 * j + 1]
            gap = reported - tested
            low, high = np.quantile(gap, [0.05, 0.95]) if len(gap) > 1 else (gap[0], gap[0])
            print(f"{variant:<30} | {len(rows):>6} | {name:<11} | {reported.mean():>11.3f} | {tested.mean():>10.3f} | "
                  f"{gap.mean():>+8.3f} [{low:+.3f}, {high:+.3f}]")
    print("(optimism: mean over samples and its 5-95 % spread; a policy counts only when the rule chose one)")
    if args.search:
        search_contamination(params, valid, test)


if __name__ == "__main__":
    main()
