"""The search: baselines, hypervolume, the pymoo wiring, and the stage's byte-identical outputs."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3

from recmoo_dag import search as S
from recmoo_dag.candidates import load_candidates
from recmoo_dag.exposure import load_window_prices
from recmoo_dag.features import load_features
from recmoo_dag.item_terms import training_terms
from recmoo_dag.objectives import CATALOGUE, OBJECTIVES
from recmoo_dag.pareto import hypervolume, nondominated
from recmoo_dag.policy import DITHER, DIVERSITY, KEEP_HEAD, POOL, VARIABLE_NAMES, accuracy_only_policy
from recmoo_dag.stages import search as search_stage
from recmoo_dag.windows import sample_users
from recmoo_dag.yardstick import sample_cases, yardsticks
from tests.conftest import section
from tests.pareto_support import N_CANDIDATES, SMALL, make_pareto_project


def run(params) -> dict:
    search_stage.main(params)
    return json.loads(open(params.search.metrics).read())


def yardsticks_of_project(params):
    """The search stage's contexts, built as the stage builds them (the project has genres: no model read)."""
    features = load_features(params.features.dir)
    terms = training_terms(features, params.policy.similarity, embeddings=lambda: pytest.fail("model read"))
    return yardsticks(features, load_candidates(params.candidates.path), terms, params.policy.k,
                      params.policy.latency, params.search.threads, load_window_prices(params.exposure.prices))


def test_a_switched_off_variable_is_held_at_zero_by_every_method():
    low, high = S.bounds(5, 40, switched_off=("keep_head", "dither"))
    assert low[KEEP_HEAD] == high[KEEP_HEAD] == low[DITHER] == high[DITHER] == 0.0
    for policies in (S.grid_policies(500, low, high), S.random_policies(200, low, high, seed=1),
                     S.initial_population(24, low, high, seed=1)):
        assert (policies[:, [KEEP_HEAD, DITHER]] == 0.0).all()
    grid = S.grid_policies(500, low, high)
    assert len(np.unique(grid, axis=0)) == len(grid)  # no level spent on a variable that cannot move
    with pytest.raises(ValueError, match="pool"):
        S.bounds(5, 40, switched_off=("pool",))
    with pytest.raises(ValueError, match="keep_hed"):
        S.bounds(5, 40, switched_off=("keep_hed",))  # a typo switches nothing off silently


def test_baselines_live_in_the_box_with_the_budget():
    low, high = S.bounds(5, 40)
    for budget in (500, 2 ** len(low), 1000):  # below 2^d points the last variables keep their low end
        grid = S.grid_policies(budget, low, high)
        assert len(grid) <= budget and len(np.unique(grid, axis=0)) == len(grid)
        full = budget >= 2 ** len(low)
        assert (grid.min(0) == low).all() and (grid.max(0) == high).all() == full
        assert (grid.max(0) == high).sum() == (len(low) if full else int(np.log2(budget)))
    random = S.random_policies(500, low, high, seed=3)
    np.testing.assert_array_equal(random, S.random_policies(500, low, high, seed=3))
    integers = random[:, [KEEP_HEAD, POOL]]
    assert ((random >= low) & (random <= high)).all() and (integers == np.round(integers)).all()
    assert high[KEEP_HEAD] == 2 and set(random[:, KEEP_HEAD]) == {0, 1, 2}  # at most half of the list kept
    start = S.initial_population(24, low, high, seed=0)
    assert start.shape == (24, len(low)) and (start[0] == accuracy_only_policy(5)).all()  # accuracy-only first
    sweep = S.mmr_sweep(50, low, high, pool=20)
    assert len(np.unique(sweep[:, DIVERSITY])) == 50
    assert (np.delete(sweep, DIVERSITY, axis=1) == np.delete(sweep[:1], DIVERSITY, axis=1)).all()  # one knob


def test_algorithm_follows_the_number_of_objectives():
    assert isinstance(S.make_algorithm("auto", 3, 24, 0), NSGA2)
    many = S.make_algorithm("auto", 6, 128, 0)
    assert isinstance(many, NSGA3) and len(many.ref_dirs) == 126  # Das-Dennis, 4 partitions
    assert isinstance(S.make_algorithm("nsga3", 2, 24, 0), NSGA3)


def test_problem_scores_the_whole_population_in_one_call():
    calls = []

    def score(X):
        calls.append(len(X))
        return np.column_stack([X.sum(1), -X.sum(1), X[:, 0]])

    low, high = S.bounds(5, 40)
    x, natural = S.run_nsga(score, lambda f: f, [0, 1], low, high, "nsga2", 16, ("n_eval", 64), seed=1)
    assert calls[0] == 16 and len(x) == sum(calls) >= 64  # one call per generation, all of it archived
    np.testing.assert_array_equal(natural, score(x))  # the archive keeps each policy's objectives
    assert (x[:, POOL] == np.round(x[:, POOL])).all()


def test_nsga3_under_the_floor_is_reproducible_when_infeasible_policies_tie():
    """Every policy below the NDCG floor by the same margin: each tournament is a tie of constraint
    violation. One seed, one archive, run after run (pymoo 0.6.2's own tournament drew these ties
    from an unseeded generator: pymoo#794)."""
    def score(X):  # NDCG 0.5 for all (floor 0.9: infeasible, equal violation); the rest vary
        return np.column_stack([np.full(len(X), 0.5), X[:, 1], X[:, 2], X[:, 3], X[:, 4], X[:, 5]])

    low, high = S.bounds(5, 40)
    losses = lambda f: np.column_stack([1.0 - f[:, :1], -f[:, 1:]])  # column 0: 1 - NDCG, as the search
    runs = [S.run_nsga(score, losses, list(range(6)), low, high, "nsga3", 28, ("n_eval", 140), seed=3,
                       ndcg_floor=0.9) for _ in range(4)]
    assert all(len(x) == len(runs[0][0]) for x, _ in runs)
    for x, _ in runs[1:]:
        np.testing.assert_array_equal(x, runs[0][0])


@pytest.fixture
def pareto_project(project, tmp_path):
    make_pareto_project(tmp_path)
    return project(SMALL)


@pytest.mark.slow
def test_stage_writes_front_plot_metrics_byte_identically(pareto_project, tmp_path):
    payload = run(pareto_project)
    assert {"n_evals", "evals_per_second", "seconds", "front_size", "hypervolume", "hypervolume_test"} <= set(payload)
    assert payload["n_evals"] >= SMALL["search"]["n_evals"]
    for key in ("hypervolume", "hypervolume_test", "hypervolume_searched"):
        assert set(payload[key]) == {"nsga", "mmr_sweep", "random", "grid"}
        assert all(0 < v < 1.1 ** 6 for v in payload[key].values())
    front = pd.read_csv(tmp_path / "reports" / "search" / "front.csv")
    assert len(front) == payload["front_size"] > 0
    assert list(front.columns[:len(VARIABLE_NAMES)]) == list(VARIABLE_NAMES)
    assert {f"{c}_{o}" for c in ("valid", "test") for o in OBJECTIVES} <= set(front.columns)
    assert front["pool"].between(5, N_CANDIDATES).all()
    assert json.loads((tmp_path / "metrics" / "search.json").read_text())["front_size"] == len(front)

    digest = lambda name: hashlib.sha256((tmp_path / "reports" / "search" / name).read_bytes()).hexdigest()
    names = [p.name for p in sorted((tmp_path / "reports" / "search").iterdir())]
    before = {name: digest(name) for name in names}
    run(pareto_project)
    assert [p.name for p in sorted((tmp_path / "reports" / "search").iterdir())] == names
    assert {name: digest(name) for name in names} == before


@pytest.mark.slow
@pytest.mark.parametrize("min_ratio, fronts, confirms", [
    ({"ndcg": 0.0, "ild": 0.0}, ["front.csv"], [True]),  # the first pick confirms: no retry
    ({"ndcg": 1.5}, ["front.csv", "front_split1.csv", "front_split2.csv"], [False] * 3),  # none ever does
])
def test_a_retry_front_is_searched_only_while_no_pick_confirms(project, tmp_path, min_ratio, fronts, confirms):
    make_pareto_project(tmp_path)
    params = project({**SMALL, "deploy": {"min_ratio": min_ratio, "splits": 3}})
    stale = tmp_path / "reports" / "search" / "front_split2.csv"  # an earlier run's, under other bounds
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("pool\n10\n")
    run(params)
    assert sorted(p.name for p in stale.parent.glob("front*.csv")) == fronts
    whole, _ = yardsticks_of_project(params)
    assert [search_stage.pick_confirms(params, whole, split) for split in range(len(fronts))] == confirms


@pytest.mark.slow
def test_front_policies_score_as_the_csv_says(pareto_project, tmp_path):
    """What deploy does: read the variables back and score them; the CSV's figures come out exactly,
    on valid those of the selection users, the search's: the deploy rule's confirmation users are
    the rest of the valid users, none of them searched on."""
    metrics = run(pareto_project)
    front = pd.read_csv(tmp_path / "reports" / "search" / "front.csv")
    whole, test = yardsticks_of_project(pareto_project)
    valid, confirmation = whole.split_for_confirmation(pareto_project.deploy.confirm_share, pareto_project.seed)
    searched, confirming = set(valid.cases.users), set(confirmation.cases.users)
    assert searched and confirming and not searched & confirming
    assert searched | confirming == set(whole.cases.users)
    assert metrics["users"]["searched"] == len(searched)
    policies = front[list(VARIABLE_NAMES)].to_numpy()
    np.testing.assert_array_equal(valid.objectives(policies), front[[f"valid_{o}" for o in S.OBJECTIVES]])
    np.testing.assert_array_equal(test.objectives(policies), front[[f"test_{o}" for o in S.OBJECTIVES]])
    for window, yard in (("valid", valid), ("test", test)):  # the catalogue's figures, as deploy reports them
        deployed = yard.replicates(policies, np.ones((1, len(yard.user_index[0]))), CATALOGUE)
        for name in CATALOGUE:
            np.testing.assert_allclose(deployed[name][:, 0], front[f"{window}_{name}"], rtol=1e-12)
    # deploy.splits: each retry's front, found on its own split's selection users, scored there (at the
    # default bounds no pick confirms in this tiny project, so the search needed all three).
    for split in range(1, pareto_project.deploy.splits):
        retry = pd.read_csv(tmp_path / "reports" / "search" / f"front_split{split}.csv")
        selection, _ = whole.split_for_confirmation(pareto_project.deploy.confirm_share, pareto_project.seed, split)
        assert set(selection.cases.users) != searched
        policies = retry[list(VARIABLE_NAMES)].to_numpy()
        np.testing.assert_array_equal(selection.objectives(policies), retry[[f"valid_{o}" for o in S.OBJECTIVES]])
        np.testing.assert_array_equal(test.objectives(policies), retry[[f"test_{o}" for o in S.OBJECTIVES]])


def test_the_user_sample_is_seeded_and_stratified_by_activity():
    activity = np.random.default_rng(0).lognormal(3, 1, 1000).astype(int) + 3
    sample = sample_users(activity, 200, seed=5)
    np.testing.assert_array_equal(sample, sample_users(activity, 200, seed=5))
    assert len(sample) == len(np.unique(sample)) == 200 and not np.array_equal(sample, sample_users(activity, 200, 6))
    deciles = np.argsort(np.argsort(activity, kind="stable"))[sample] // 100  # each user's activity decile
    assert np.bincount(deciles, minlength=10).tolist() == [20] * 10  # heavy and light users alike
    np.testing.assert_array_equal(sample_users(activity, None, 5), np.arange(1000))
    np.testing.assert_array_equal(sample_users(activity, 5000, 5), np.arange(1000))


def test_the_basket_sample_spreads_over_users_and_is_seeded():
    from recmoo_dag.windows import Cases, histories_of

    users = np.repeat(np.arange(6), [1, 2, 3, 4, 5, 9])  # 24 baskets of 6 users
    n = len(users)
    cases = Cases("valid", users, histories_of(np.arange(n + 1), np.ones(n, dtype=np.int32), np.ones(n, bool)),
                  np.arange(n + 1), np.ones(n, dtype=np.int32))
    activity = np.array([5, 3, 8, 1, 9, 2])
    sample = sample_cases(cases, activity, 12, seed=2)
    np.testing.assert_array_equal(sample, sample_cases(cases, activity, 12, seed=2))
    assert len(sample) == 11  # two baskets a user, but user 0 has only one
    assert np.bincount(users[sample]).tolist() == [1, 2, 2, 2, 2, 2]
    few = sample_cases(cases, activity, 3, seed=2)  # fewer than users: one basket of each of 3 users
    assert len(np.unique(users[few])) == 3 == len(few)
    np.testing.assert_array_equal(sample_cases(cases, activity, None, 2), np.arange(n))


EVALUATION = section("evaluation", replicates=200)


@pytest.mark.slow
def test_a_sampled_search_reports_fronts_rescored_on_every_basket(pareto_project):
    valid, test = yardsticks_of_project(pareto_project)
    activity = np.bincount(valid.cases.users, minlength=valid.cases.users.max() + 1)
    sample = sample_cases(valid.cases, activity, 30, seed=1)
    result = S.search(valid, test, list(OBJECTIVES), "auto", 24, ("n_eval", 240), 1.1, 20, 0, EVALUATION, 0.02,
                      cases=sample, rescore_policies=12)
    assert result.baskets_searched == len(sample) == 30 < valid.requests.n_requests
    assert all(0 < len(front.x) <= 12 for front in result.fronts.values())  # the re-scoring is bounded
    for method, front in result.fronts.items():
        # The reported figures are the policies' own on every valid basket and on test.
        np.testing.assert_array_equal(valid.objectives(front.x), front.valid, err_msg=method)
        np.testing.assert_array_equal(test.objectives(front.x), front.test, err_msg=method)
        losses = valid.losses(front.valid)
        assert len(nondominated(losses)) == len(losses)  # non-dominated on everyone
    ratio = result.fronts["nsga"].ndcg_ratio["test"]  # (P, 3): the paired ratio inside its interval
    np.testing.assert_allclose(ratio[:, 0], result.fronts["nsga"].test[:, 0] / result.accuracy_only["test"][0])
    assert (ratio[:, 1] <= ratio[:, 0]).all() and (ratio[:, 0] <= ratio[:, 2]).all()
    assert 0 < result.paired_se_all < result.paired_se_searched  # more baskets, less noise
    # The search's own view: every policy a method evaluated, on the sample.
    searched, (low, high) = valid.subset(sample), S.bounds(valid.k, valid.requests.n_candidates)
    random = S.random_policies(result.n_evals, low, high, 0)
    assert result.hypervolume_searched["random"] == pytest.approx(
        hypervolume(searched.losses(searched.objectives(random)), 1.1), rel=1e-12)
    assert result.hypervolume_searched["random"] != result.hypervolume["random"]
    # Every basket as the "sample" is the plain search, to the bit.
    plain = S.search(valid, test, list(OBJECTIVES), "auto", 24, ("n_eval", 240), 1.1, 20, 0, EVALUATION, 0.02)
    every = S.search(valid, test, list(OBJECTIVES), "auto", 24, ("n_eval", 240), 1.1, 20, 0, EVALUATION, 0.02,
                     cases=np.arange(valid.requests.n_requests))
    np.testing.assert_array_equal(plain.fronts["nsga"].x, every.fronts["nsga"].x)
    assert plain.hypervolume == every.hypervolume == every.hypervolume_searched


@pytest.mark.slow
def test_a_stalled_hypervolume_stops_nsga_and_the_baselines_get_what_it_used(pareto_project):
    valid, test = yardsticks_of_project(pareto_project)
    result = S.search(valid, test, list(OBJECTIVES), "auto", 24, ("n_eval", 2400), 1.1, 20, 0, EVALUATION, 0.02,
                      stall=(3, 10.0))  # "less than 1,000% gain in 3 generations": stops at once
    assert result.n_evals <= 24 * 5 < 2400
    assert all(result.front_size_before_thinning[m] <= result.n_evals for m in result.fronts)


@pytest.mark.slow
def test_under_an_ndcg_floor_every_method_reports_only_policies_above_it(pareto_project):
    valid, test = yardsticks_of_project(pareto_project)
    free = S.search(valid, test, list(OBJECTIVES), "auto", 24, ("n_eval", 480), 1.1, 20, 0, EVALUATION, 0.0)
    floored = S.search(valid, test, list(OBJECTIVES), "auto", 24, ("n_eval", 480), 1.1, 20, 0, EVALUATION, 0.0,
                       ndcg_floor=0.9)
    floor = 0.9 * valid.accuracy_only[0]
    for method, front in floored.fronts.items():
        assert len(front.x) > 0 and (front.valid[:, 0] >= floor).all(), method
    # Without the constraint part of NSGA's front lies below the floor, where the deploy bounds never choose.
    assert (free.fronts["nsga"].valid[:, 0] < floor).any()


def test_candidates_of_other_features_are_refused_in_one_clean_line(pareto_project, tmp_path, capsys):
    """features rebuilt from another log while candidates.npz stayed (a stage run by hand, outside
    dvc repro): the search names the stale file and the fix, and writes nothing."""
    from recmoo_dag.cli import main
    from recmoo_dag.features import build_features, write_features
    from recmoo_dag.synth import synthesize
    from tests.conftest import section

    interactions, items = synthesize(n_users=90, n_items=70, n_events=3000, n_categories=5, seed=1)
    write_features(build_features(interactions, items, section("features", min_user_interactions=5,
                                                               min_item_interactions=3)),
                   tmp_path / "data" / "features")
    assert main(["search"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recmoo search: error: candidates.npz: its valid baskets are not the features' "
                          "(re-run `dvc repro`)") and err.count("\n") == 1
    assert not (tmp_path / "reports" / "search" / "front.csv").exists()
