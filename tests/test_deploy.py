"""The deploy stage: choose, judge and publish composed on a tiny project; the champion re-scored."""
import json
from pathlib import Path

import numpy as np
import pytest

from recmoo_dag import deploy, store
from recmoo_dag.bundle import read_bundle
from recmoo_dag.candidates import load_candidates
from recmoo_dag.choice import choose_between, choose_policy, clamp_pools, shortfalls
from recmoo_dag.errors import InputError
from recmoo_dag.objectives import CATALOGUE, JUDGED, label
from recmoo_dag.policy import VARIABLE_NAMES
from recmoo_dag.stages.deploy import main as deploy_main
from recmoo_dag.uncertainty import Ratio
from tests.deploy_support import FRONT, NO_BOUNDS, base_project, copy_project, perturb_model, write_front

LABELS = {label(name, 10) for name in JUDGED}


def run(params) -> dict:
    """The deploy stage, as `recmoo deploy` runs it; returns metrics/deploy.json."""
    deploy_main(params)
    return json.loads(Path(params.deploy.metrics).read_text())


@pytest.fixture
def deployable(tmp_path, tmp_path_factory, monkeypatch):
    """A private copy of the tiny project as the working directory; call it with params overrides."""
    base = base_project(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    return lambda overrides=None: copy_project(base, tmp_path, overrides)


# ------------------------------------------------------------------------------------ the stage
def test_first_deploy_promotes_and_writes_exactly_the_documented_metrics(deployable):
    params = deployable()
    written = run(params)
    assert set(written) == {"version", "policy", "fallback", "test", "valid", "gate"} and written["fallback"] is None
    assert set(written["policy"]) == set(VARIABLE_NAMES)
    assert set(written["test"]) == {"accuracy_only", "deployed", "ratio"} and set(written["valid"]) == {"ratio"}
    # A policy's figures add the catalogue's (exposure Gini, tail share) to the judged objectives;
    # ratios are of the judged ones.
    figure_labels = LABELS | {label(name, 10) for name in CATALOGUE}
    test, valid = written["test"], written["valid"]
    for figures, labels in ((test["accuracy_only"], figure_labels), (test["deployed"], figure_labels),
                            (test["ratio"], LABELS), (valid["ratio"], LABELS)):
        assert set(figures) == labels | {f"{name}_ci" for name in labels}
        for name in labels:  # every figure inside its interval
            low, high = figures[f"{name}_ci"]
            assert low <= figures[name] + 1e-12 and figures[name] <= high + 1e-12, name
    assert set(written["gate"]) == {"promoted", "reason", "power"}
    assert (written["gate"]["promoted"], written["gate"]["reason"]) == (True, "first deployment: bounds hold on test")
    # What the test window can certify: per bound, a true ratio above it by about 2.5 standard errors of
    # the measured ratio (one-sided 95 % test, 80 % power): the bound itself where no resample moves the
    # ratio (the tiny project's pick, whose lists no user's figures tell apart), never more than twice
    # the interval's width above it (tests/test_uncertainty.py checks the power by simulation).
    power = written["gate"]["power"]
    assert power["probability"] == 0.8 and set(power["ratio_needed"]) == {"ndcg@10", "ild@10"}
    for name, bound in params.deploy.min_ratio.items():
        key = label(name, 10)
        low, high = written["test"]["ratio"][f"{key}_ci"]
        assert bound - 1e-12 <= power["ratio_needed"][key] <= bound + 2 * (high - low) + 1e-12, (key, power)
    assert written["version"] == "v0001" == store.current_version(params.deploy.store)
    # The deployed policy meets the bound on test, against the same accuracy-only lists, paired.
    test = written["test"]
    assert test["ratio"]["ndcg@10"] == pytest.approx(test["deployed"]["ndcg@10"] / test["accuracy_only"]["ndcg@10"])
    assert test["ratio"]["ndcg@10"] >= 0.98  # the gate judged its one-sided lower bound against 0.98
    manifest = store.read_manifest(params.deploy.store)
    assert manifest["policy"] == written["policy"] and manifest["test"] == written["test"]


def test_rerun_without_changes_keeps_the_champion_and_publishes_nothing(deployable):
    params = deployable()
    first = run(params)
    again = run(params)
    assert again["gate"]["promoted"] is False and "nothing to publish" in again["gate"]["reason"]
    assert again["version"] == "v0001" and again["policy"] == first["policy"] and again["test"] == first["test"]
    assert store.list_versions(params.deploy.store) == ["v0001"]
    assert [d["event"] for d in store.read_decisions(params.deploy.store)] == ["deploy", "deploy"]


def test_regression_against_the_champion_keeps_it_and_says_why(deployable):
    # The champion weights novelty heavily; the challenger is the plain model order: far less novelty.
    params = deployable({"deploy": {"select_on": "test", "min_ratio": NO_BOUNDS}})
    write_front(params, [FRONT[2]])
    champion = run(params)
    write_front(params, [FRONT[0]])
    challenger = run(params)
    assert challenger["gate"]["promoted"] is False
    reason = challenger["gate"]["reason"]
    assert "regresses vs champion v0001" in reason and "novelty" in reason and reason.endswith("champion v0001 kept")
    # metrics/deploy.json describes what is served: still the champion, measured on today's data.
    assert challenger["version"] == "v0001" and challenger["policy"] == champion["policy"]
    assert {name: challenger["test"]["deployed"][name] for name in LABELS} == pytest.approx(
        {name: champion["test"]["deployed"][name] for name in LABELS})
    assert store.list_versions(params.deploy.store) == ["v0001"]


def test_retrained_model_is_promoted_and_rollback_restores_any_version(deployable):
    params = deployable({"deploy": {"min_ratio": NO_BOUNDS, "tolerance": dict.fromkeys(JUDGED, 1.0)}})
    run(params)
    perturb_model(params, seed=11)  # as after retraining: the champion is re-scored with its own model
    second = run(params)
    assert second["gate"]["promoted"] and second["version"] == "v0002"
    assert "no objective regresses beyond tolerance vs champion v0001" in second["gate"]["reason"]
    root = params.deploy.store
    assert store.rollback(root) == ("v0002", "v0001") and store.current_version(root) == "v0001"
    assert store.rollback(root, "2") == ("v0001", "v0002")
    with pytest.raises(store.StoreError, match="no complete version v0009"):
        store.rollback(root, "v9")
    store.rollback(root, "v0001")
    with pytest.raises(store.StoreError, match="v0001 is the oldest version"):
        store.rollback(root)
    assert [d["event"] for d in store.read_decisions(root)][-3:] == ["rollback"] * 3


@pytest.mark.parametrize(("confidence", "judged"), [(0.5, "on point estimates"), (0.95, "at 95% confidence")])
def test_with_no_fallback_no_feasible_policy_deploys_nothing_and_says_why(deployable, confidence, judged):
    params = deployable({"deploy": {"min_ratio": {"coverage": 2.0},  # twice the catalog: impossible
                                    "confidence": confidence, "fallback": "none"}})
    payload = run(params)
    assert payload["version"] is None and payload["gate"]["promoted"] is False and payload["fallback"] is None
    assert payload["gate"]["reason"] == ("no policy of the front meets the bounds (ndcg@10 >= 0.98 x accuracy-only, "
                                         "ild@10 >= 1 x accuracy-only, coverage@10 >= 2 x accuracy-only, "
                                         f"{judged}); nothing deployed")
    assert store.current_version(params.deploy.store) is None


def test_unreachable_bounds_serve_the_accuracy_only_policy_and_record_why(deployable):
    """No front policy doubles coverage: the first run still serves something, the generator's own
    top-k, and says which bound failed, where and by how much."""
    params = deployable({"deploy": {"min_ratio": {"ndcg": 0.98, "coverage": 2.0}}})
    payload = run(params)
    assert payload["version"] == "v0001" == store.current_version(params.deploy.store)
    assert payload["gate"]["promoted"] and payload["gate"]["reason"].startswith(
        "fallback to the accuracy-only policy (deploy.fallback): no policy of the front meets the bounds")
    assert payload["policy"] == dict(zip(VARIABLE_NAMES, [0.0] * (len(VARIABLE_NAMES) - 1) + [10]))
    assert payload["test"]["deployed"] == payload["test"]["accuracy_only"]
    assert payload["gate"]["power"] == {"probability": 0.8, "ratio_needed": None}  # no candidate reached the gate
    # The figures of one policy, the front's nearest to meeting both bounds: coverage is missed.
    failed = {f["objective"]: f for f in payload["fallback"]["failed"]}
    coverage = failed["coverage@10"]
    assert coverage["where"] == "valid" and coverage["required"] == 2.0 and coverage["ratio"] >= 1
    assert all(f["failed"] and f["missed_by"] == pytest.approx(f["required"] - f["lower_bound"])
               and f["lower_bound"] <= f["ratio"] for f in failed.values())
    # The served fallback is a champion like any other: a second run keeps it (the fallback never
    # replaces a champion), and a candidate that the gate accepts replaces it.
    again = run(params)
    assert again["version"] == "v0001" and not again["gate"]["promoted"] and again["fallback"] is None
    reachable = deployable({"deploy": {"min_ratio": NO_BOUNDS, "maximize": "novelty",
                                       "tolerance": dict.fromkeys(JUDGED, 1.0)}})
    replaced = run(reachable)
    assert replaced["version"] == "v0002" and replaced["fallback"] is None
    assert replaced["policy"] != payload["policy"]


def test_shortfalls_say_which_bound_failed_where_and_by_how_much():
    measured = {"ndcg": Ratio(0.97, 0.95, 0.99, 0.955), "ild": Ratio(1.2, 1.1, 1.3, 1.12)}
    ndcg, ild = shortfalls(measured, {"ndcg": 0.98, "ild": 1.5}, 5, "test")
    assert ndcg == {"objective": "ndcg@5", "where": "test", "ratio": 0.97, "lower_bound": 0.955, "required": 0.98,
                    "failed": True, "missed_by": pytest.approx(0.025)}
    assert ild["failed"] and ild["ratio"] == 1.2 and ild["missed_by"] == pytest.approx(0.38)
    (met,) = shortfalls(measured, {"ild": 1.1}, 5, "valid")
    assert not met["failed"] and met["missed_by"] == 0.0


def test_champion_rescoring_reproduces_the_candidates_of_the_same_model(deployable):
    params = deployable()
    run(params)
    from recmoo_dag.features import load_features

    cands = load_candidates(params.candidates.path)
    features = load_features(params.features.dir)
    items, scores = deploy.champion_candidates(read_bundle(store.version_dir(params.deploy.store)), features,
                                               features.cases("test"), cands["test_items"].shape[1], 64)
    np.testing.assert_array_equal(items, cands["test_items"])
    # Another batch size reorders float32 sums: last-bit differences on near-zero scores, same ranking.
    np.testing.assert_allclose(scores, cands["test_scores"], rtol=1e-5, atol=1e-6)


def test_champion_with_another_item_order_is_translated_by_item_id(deployable):
    """A champion whose catalog numbers the items differently (as after new data) ranks the same
    items once its histories and scores are translated by id."""
    import shutil

    from safetensors.torch import load_file, save_file

    from recmoo_dag.features import load_features

    params = deployable()
    run(params)
    folder = Path("champion")
    shutil.copytree(store.version_dir(params.deploy.store), folder)
    with np.load(folder / "catalog.npz", allow_pickle=False) as catalog:
        arrays = {key: catalog[key] for key in catalog.files}
    n = len(arrays["item_ids"])
    order = np.concatenate([[0], 1 + np.random.default_rng(0).permutation(n - 1)])  # new index -> old index
    for key in ("item_ids", "titles", "train_counts", "item_vectors"):
        arrays[key] = arrays[key][order]
    with open(folder / "catalog.npz", "wb") as handle:
        np.savez(handle, **arrays)
    weights = load_file(folder / "model" / "model.safetensors")
    weights["item_embedding.weight"] = weights["item_embedding.weight"][order].contiguous()
    save_file(weights, folder / "model" / "model.safetensors")

    cands = load_candidates(params.candidates.path)
    features = load_features(params.features.dir)
    items, scores = deploy.champion_candidates(read_bundle(folder), features, features.cases("test"),
                                               cands["test_items"].shape[1], 64)
    np.testing.assert_allclose(scores, cands["test_scores"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(items, cands["test_items"])


def test_the_champion_is_judged_with_the_prices_it_serves(deployable):
    """The version carries the prices it was judged with on test (the test window's, not valid's).
    Prices re-solved since the champion was deployed (another floor) leave its figures as they
    were: it is scored with its own prices, mapped by item id, not today's."""
    from recmoo_dag.exposure import load_window_prices
    from recmoo_dag.features import load_features
    from recmoo_dag.policy import policy_vector
    from recmoo_dag.stages import exposure
    from recmoo_dag.stages.search import yardsticks_of

    params = deployable()
    write_front(params, [FRONT[2]])
    run(params)
    champion, policy = deploy.load_champion(params.deploy.store), policy_vector(FRONT[2])[None]
    windows = load_window_prices(params.exposure.prices)
    assert np.array_equal(champion.bundle.prices.cap, windows["test"].cap)
    assert np.array_equal(champion.bundle.prices.floor, windows["test"].floor)
    assert not np.array_equal(champion.bundle.prices.cap, windows["valid"].cap)
    features, today = load_features(params.features.dir), deploy.identity(params.train.model_dir, params.features.dir)
    _, served_with = yardsticks_of(params, features)
    assert deploy.champion_yardstick(champion, served_with, features, served_with.terms, 64, today) is served_with

    resolved = params.model_copy(update={"exposure": params.exposure.model_copy(update={"floor": 5.0})})
    exposure.main(resolved)
    _, test = yardsticks_of(resolved, features)
    judged = deploy.champion_yardstick(champion, test, features, test.terms, 64, today)
    assert not np.array_equal(test.objectives(policy), served_with.objectives(policy))  # the new prices move it
    np.testing.assert_array_equal(judged.objectives(policy), served_with.objectives(policy))


def test_the_constrained_rule_can_prefer_the_lowest_exposure_gini(deployable):
    """deploy.maximize: exposure_gini (a catalogue figure, lower is better): of the front's policies
    meeting the bounds, the one whose lists spread exposure widest (ranked on every valid user here:
    no confirmation split), and the deploy stage serves it."""
    from recmoo_dag.features import load_features
    from recmoo_dag.front import read_front
    from recmoo_dag.stages.search import yardsticks_of

    params = deployable({"deploy": {"min_ratio": NO_BOUNDS, "maximize": "exposure_gini", "confirm_share": 0.0}})
    write_front(params, FRONT)
    payload = run(params)
    assert payload["gate"]["promoted"]
    valid, _ = yardsticks_of(params, load_features(params.features.dir))
    front = clamp_pools(read_front(params.search.front), 10, valid.requests.n_candidates)
    choice = choose_policy([front], valid, params.deploy, 10, params.evaluation, params.seed)
    assert choice.reason.startswith("min exposure_gini@10 among 3 policies")
    lowest = front[np.argmin(valid.catalogue(front)[:, 0])]
    np.testing.assert_array_equal(choice.policy, lowest)
    assert payload["policy"] == dict(zip(VARIABLE_NAMES, [float(v) if n != "pool" else int(v)
                                                         for n, v in zip(VARIABLE_NAMES, lowest)]))


def test_a_pick_that_does_not_confirm_is_tried_again_on_a_new_split_of_the_valid_users(deployable):
    """deploy.splits: the first split's front holds only a policy far from the model's lists, which
    meets no bound; the second split's front (found on its own selection users) has one that does,
    and the rule's pick there, confirmed on that split's other users, goes to the gate."""
    from recmoo_dag.features import load_features
    from recmoo_dag.front import read_front
    from recmoo_dag.stages.search import yardsticks_of

    params = deployable({"deploy": {"splits": 2}})
    write_front(params, [FRONT[2]])
    write_front(params, FRONT[:2], split=1)
    valid, _ = yardsticks_of(params, load_features(params.features.dir))
    fronts = [clamp_pools(read_front(params.search.front_of(split)), 10, valid.requests.n_candidates)
              for split in range(2)]
    halves = [valid.split_for_confirmation(params.deploy.confirm_share, params.seed, split) for split in range(2)]
    assert not np.array_equal(halves[0][1].cases.users, halves[1][1].cases.users)
    on_split = [choose_between(front, *half, params.deploy, 10, params.evaluation, params.seed)
                for front, half in zip(fronts, halves)]
    assert on_split[0].policy is None and on_split[1].policy is not None

    choice = choose_policy(fronts, valid, params.deploy, 10, params.evaluation, params.seed)
    np.testing.assert_array_equal(choice.policy, on_split[1].policy)
    assert choice.reason == f"split 2 of up to 2: {on_split[1].reason}" and choice.confirmed == on_split[1].confirmed
    payload = run(params)
    assert payload["gate"]["promoted"] and payload["fallback"] is None
    manifest = store.read_manifest(params.deploy.store, payload["version"])
    assert "split 2 of up to 2" in manifest["rule"]
    fronts = {link["name"]: link for link in manifest["lineage"]}["front"]["files"]
    assert set(fronts) == {"reports/search/front.csv", "reports/search/front_split1.csv"}


def test_when_no_split_confirms_the_record_gives_every_split_and_the_first_ones_shortfalls(deployable):
    from recmoo_dag.features import load_features
    from recmoo_dag.front import read_front
    from recmoo_dag.stages.search import yardsticks_of

    params = deployable({"deploy": {"splits": 2}})
    for split in range(2):
        write_front(params, [FRONT[2]], split)
    valid, _ = yardsticks_of(params, load_features(params.features.dir))
    front = clamp_pools(read_front(params.search.front), 10, valid.requests.n_candidates)
    first = choose_between(front, *valid.split_for_confirmation(params.deploy.confirm_share, params.seed),
                                  params.deploy, 10, params.evaluation, params.seed)
    choice = choose_policy([front, front], valid, params.deploy, 10, params.evaluation, params.seed)
    assert choice.policy is None and choice.shortfalls == first.shortfalls
    assert choice.reason.startswith(f"split 1 of up to 2: {first.reason}; split 2 of up to 2: ")
    payload = run(params)
    assert payload["fallback"] is not None and payload["gate"]["promoted"]
    assert "split 2 of up to 2" in store.read_decisions(params.deploy.store)[-1]["rule"]


def test_a_front_is_read_only_when_its_split_is_reached_and_a_missing_one_is_a_clear_error(deployable):
    """The search writes a retry's front only when the pick on the split before it does not confirm."""
    params = deployable({"deploy": {"splits": 2}})
    assert run(params)["gate"]["promoted"]  # the first split's pick confirms: front_split1.csv is never read
    params = deployable({"deploy": {"splits": 2}})
    write_front(params, [FRONT[2]])
    with pytest.raises(InputError, match=r"front_split1\.csv: no front here \(run `recmoo search`\)"):
        run(params)
