"""The deploy stage: decision rules, the promotion gate, atomic publish under kills, rollback."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from recmoo_dag import deploy, store
from recmoo_dag.candidates import load_candidates
from recmoo_dag.decision import OBJECTIVES, choose, gate, ndcg_lower_bound
from recmoo_dag.policy import NAMES
from tests.conftest import REPO
from tests.deploy_support import FRONT, NO_BOUNDS, base_project, copy_project, perturb_model, write_front

WEIGHTS = dict.fromkeys(OBJECTIVES, 1.0)


@pytest.fixture
def deployable(tmp_path, tmp_path_factory, monkeypatch):
    """A private copy of the tiny project as the working directory; call it with params overrides."""
    base = base_project(tmp_path_factory)
    monkeypatch.chdir(tmp_path)
    return lambda overrides=None: copy_project(base, tmp_path, overrides)


# ------------------------------------------------------------------------------------ decision rules
# Columns: ndcg@10, ild@10, coverage@10, novelty, personalization. Reference = accuracy-only.
REFERENCE = np.array([0.100, 0.50, 0.20, 3.0, 0.50])
FRONT_F = np.array([
    [0.1000, 0.50, 0.20, 3.0, 0.50],  # 0: accuracy-only
    [0.0990, 0.60, 0.35, 3.2, 0.60],  # 1: -1% NDCG, more of everything
    [0.0970, 0.70, 0.50, 3.5, 0.70],  # 2: -3% NDCG: outside the 0.98 bound
    [0.0985, 0.65, 0.30, 3.1, 0.55],  # 3: -1.5% NDCG, the most ILD among the feasible
])


def test_constrained_rule_maximizes_coverage_within_the_ndcg_bound():
    index, why = choose("constrained", FRONT_F, REFERENCE, {"ndcg@10": 0.98}, "coverage@10", WEIGHTS)
    assert index == 1 and "max coverage@10 among 3 policies" in why
    # Another objective and a second bound: ILD >= 1.25 x accuracy-only leaves policies 2 and 3.
    index, _ = choose("constrained", FRONT_F, REFERENCE, {"ild@10": 1.25}, "ndcg@10", WEIGHTS)
    assert index == 3


def test_ndcg_bound_at_a_confidence_level_needs_a_margin_for_noise():
    rng = np.random.default_rng(0)
    reference = (rng.random(900) < 0.1) / np.log2(2 + rng.integers(0, 10, 900))  # accuracy-only per user
    steady = reference * 0.99  # -1% for every user: little noise in the difference
    noisy = reference.copy()
    lose = np.flatnonzero(reference > 0)[:6]
    noisy[lose] = 0.0  # -1% on average too, in a few users' hits: a noisy difference
    noisy *= reference.mean() * 0.99 / noisy.mean()
    lower = ndcg_lower_bound(np.stack([steady, noisy]), reference, 0.95)
    assert lower[0] >= 0.98 * reference.mean() > lower[1]
    np.testing.assert_allclose(ndcg_lower_bound(np.stack([steady, noisy]), reference, 0.5), [steady.mean(), noisy.mean()])
    F = np.tile(REFERENCE, (2, 1))
    F[:, 0] = [steady.mean(), noisy.mean()]
    F[1, 2] = 0.9  # the noisy policy has far more coverage: picked on point estimates, not at 95%
    point, _ = choose("constrained", F, np.r_[reference.mean(), REFERENCE[1:]], {"ndcg@10": 0.98}, "coverage@10", WEIGHTS)
    confident, why = choose("constrained", F, np.r_[reference.mean(), REFERENCE[1:]], {"ndcg@10": 0.98},
                            "coverage@10", WEIGHTS, lower)
    assert (point, confident) == (1, 0) and "lower confidence bound" in why


def test_every_rule_says_so_when_no_policy_meets_the_bounds():
    for rule in ("constrained", "asf", "pseudo_weights", "knee"):
        index, why = choose(rule, FRONT_F, REFERENCE, {"ndcg@10": 1.01}, "coverage@10", WEIGHTS)
        assert index is None and "no policy of the front meets the bounds (ndcg@10 >= 1.01" in why


def test_asf_and_pseudo_weights_follow_the_weights():
    for rule in ("asf", "pseudo_weights"):
        on_ndcg, _ = choose(rule, FRONT_F, REFERENCE, {}, "coverage@10", {"ndcg@10": 1.0})
        on_coverage, _ = choose(rule, FRONT_F, REFERENCE, {}, "coverage@10", {"coverage@10": 1.0})
        assert (on_ndcg, on_coverage) == (0, 2), rule
    # Within the bound the coverage-minded choice moves to the best feasible trade-off.
    index, _ = choose("asf", FRONT_F, REFERENCE, {"ndcg@10": 0.98}, "coverage@10", {"coverage@10": 1.0})
    assert index == 1


def test_knee_rule_finds_the_bend_of_a_two_objective_front():
    # NDCG against coverage (other objectives constant): flat, then a sharp bend at index 5.
    coverage_axis = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7])
    ndcg_axis = np.array([1.0, 0.998, 0.996, 0.994, 0.992, 0.99, 0.8, 0.6, 0.4, 0.2])
    F = np.column_stack([ndcg_axis, np.full(10, 0.5), coverage_axis, np.full(10, 3.0), np.full(10, 0.5)])
    index, why = choose("knee", F, F[0], {}, "coverage@10", WEIGHTS)
    assert index == 5, why


# ------------------------------------------------------------------------------------------- gate
A = dict(zip(OBJECTIVES, [0.100, 0.50, 0.20, 3.0, 0.50]))
B = dict(zip(OBJECTIVES, [0.099, 0.60, 0.35, 3.2, 0.60]))
TOL = dict.fromkeys(OBJECTIVES, 0.02)


def test_gate_first_deployment_needs_only_the_bounds():
    assert gate(B, A, None, {"ndcg@10": 0.98}, TOL).promoted
    refused = gate(B, A, None, {"ndcg@10": 0.995}, TOL)
    assert not refused.promoted
    assert refused.reason == "bounds fail on test: ndcg@10 0.0990 < 0.995 x accuracy-only 0.1000; nothing deployed"


def test_gate_keeps_the_champion_on_a_regression_beyond_tolerance():
    worse = {**B, "coverage@10": 0.30}  # -14% coverage vs B, beyond 2%
    decision = gate(worse, A, B, {"ndcg@10": 0.98}, TOL, champion_version="v0003")
    assert not decision.promoted
    assert "coverage@10 0.3000 < champion 0.3500 - 2%" in decision.reason and "champion v0003 kept" in decision.reason
    within = {**B, "coverage@10": 0.345, "ild@10": 0.65}  # -1.4% coverage: inside the tolerance
    assert gate(within, A, B, {"ndcg@10": 0.98}, TOL, champion_version="v0003").promoted


def test_gate_replaces_a_champion_that_no_longer_meets_the_bounds():
    # On today's test data the champion B has lost accuracy (say the data moved); the candidate has
    # less of everything else but meets the bounds: a bound outranks the regression tolerances.
    stale = {**B, "ndcg@10": 0.090}
    decision = gate(A, A, stale, {"ndcg@10": 0.98}, TOL, champion_version="v0004")
    assert decision.promoted
    assert decision.reason == ("bounds hold on test; champion v0004 no longer meets them "
                               "(ndcg@10 0.0900 < 0.98 x accuracy-only 0.1000)")


def test_gate_records_why_nothing_was_chosen_or_published():
    none = gate(None, A, B, {}, TOL, "v0002", no_candidate_reason="no policy of the front meets the bounds (x)")
    assert not none.promoted and none.reason == "no policy of the front meets the bounds (x); champion v0002 kept"
    same = gate(B, A, B, {}, TOL, "v0002", identical=True)
    assert not same.promoted and "nothing to publish" in same.reason


# ------------------------------------------------------------------------------------ the stage
def test_first_deploy_promotes_and_writes_exactly_the_documented_metrics(deployable):
    params = deployable()
    payload = deploy.run(params)
    written = json.loads(Path(params.deploy.metrics).read_text())
    assert written == payload
    assert set(written) == {"version", "policy", "test", "gate"}
    assert set(written["policy"]) == set(NAMES)
    assert set(written["test"]) == {"accuracy_only", "deployed"}
    assert all(set(written["test"][side]) == set(OBJECTIVES) for side in ("accuracy_only", "deployed"))
    assert set(written["gate"]) == {"promoted", "reason"}
    assert written["gate"] == {"promoted": True, "reason": "first deployment: bounds hold on test"}
    assert written["version"] == "v0001" == store.current_version(params.deploy.store)
    # The deployed policy meets the bound on test, against the same accuracy-only lists.
    test = written["test"]
    assert test["deployed"]["ndcg@10"] >= 0.98 * test["accuracy_only"]["ndcg@10"]
    manifest = store.read_manifest(params.deploy.store)
    assert manifest["policy"] == written["policy"] and manifest["test"] == written["test"]


def test_rerun_without_changes_keeps_the_champion_and_publishes_nothing(deployable):
    params = deployable()
    first = deploy.run(params)
    again = deploy.run(params)
    assert again["gate"]["promoted"] is False and "nothing to publish" in again["gate"]["reason"]
    assert again["version"] == "v0001" and again["policy"] == first["policy"] and again["test"] == first["test"]
    assert store.list_versions(params.deploy.store) == ["v0001"]
    assert [d["event"] for d in store.read_decisions(params.deploy.store)] == ["deploy", "deploy"]


def test_regression_against_the_champion_keeps_it_and_says_why(deployable):
    # The champion weights novelty heavily; the challenger is the plain model order: far less novelty.
    params = deployable({"deploy": {"select_on": "test", "min_ratio": NO_BOUNDS}})
    write_front(params, [FRONT[2]])
    champion = deploy.run(params)
    write_front(params, [FRONT[0]])
    challenger = deploy.run(params)
    assert challenger["gate"]["promoted"] is False
    reason = challenger["gate"]["reason"]
    assert "regresses vs champion v0001" in reason and "novelty" in reason and reason.endswith("champion v0001 kept")
    # metrics/deploy.json describes what is served: still the champion, measured on today's data.
    assert challenger["version"] == "v0001" and challenger["policy"] == champion["policy"]
    assert challenger["test"]["deployed"] == pytest.approx(champion["test"]["deployed"])
    assert store.list_versions(params.deploy.store) == ["v0001"]


def test_retrained_model_is_promoted_and_rollback_restores_any_version(deployable):
    params = deployable({"deploy": {"min_ratio": NO_BOUNDS, "tolerance": dict.fromkeys(OBJECTIVES, 1.0)}})
    deploy.run(params)
    perturb_model(params, seed=11)  # as after retraining: the champion is re-scored with its own model
    second = deploy.run(params)
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


@pytest.mark.parametrize(("confidence", "judged"), [(0.5, ""), (0.95, " (lower confidence bound)")])
def test_no_feasible_policy_deploys_nothing_and_says_why(deployable, confidence, judged):
    params = deployable({"deploy": {"min_ratio": {"coverage@10": 2.0},  # twice the catalog: impossible
                                    "confidence": confidence}})
    payload = deploy.run(params)
    assert payload["version"] is None and payload["gate"]["promoted"] is False
    assert payload["gate"]["reason"] == (f"no policy of the front meets the bounds (ndcg@10{judged} >= 0.98 x "
                                         "accuracy-only, ild@10 >= 1 x accuracy-only, coverage@10 >= 2 x "
                                         "accuracy-only); nothing deployed")
    assert store.current_version(params.deploy.store) is None


def test_champion_rescoring_reproduces_the_candidates_of_the_same_model(deployable):
    params = deployable()
    deploy.run(params)
    from recmoo_dag.features import load_features

    cands = load_candidates(params.candidates.path)
    items, scores = deploy.champion_candidates(store.version_dir(params.deploy.store), load_features(params.features.dir),
                                               cands["test_items"].shape[1], 64)
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
    deploy.run(params)
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
    items, scores = deploy.champion_candidates(folder, load_features(params.features.dir),
                                               cands["test_items"].shape[1], 64)
    np.testing.assert_allclose(scores, cands["test_scores"], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(items, cands["test_items"])


def test_front_without_the_decision_variables_is_a_clear_error(tmp_path):
    (tmp_path / "front.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"front.csv: columns \['log10_temperature'"):
        deploy.read_front(tmp_path / "front.csv")


def test_store_is_ignored_by_git_and_no_dvc_out():
    assert "/deployments/" in (REPO / ".gitignore").read_text().splitlines()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = [str(o if isinstance(o, str) else next(iter(o))) for s in stages.values()
            for key in ("outs", "metrics", "plots") for o in s.get(key, [])]
    assert not any(o.startswith(("deployments", "${deploy.store}")) for o in outs)


# ------------------------------------------------------------------------------ atomic publish
KILLER = """
import hashlib, json, os, signal, sys
sys.path.insert(0, {repo!r})
from recmoo_dag import store

root, kill_at, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])

def build(folder, name):
    digests = {{}}
    for i in range(8):
        data = os.urandom(256 * 1024)
        (folder / f"part{{i}}.bin").write_bytes(data)
        digests[f"part{{i}}.bin"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps({{"version": name, "files": digests}}))

def hook(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

for _ in range(rounds):
    with store.locked(root):
        store.publish(root, build, hook)
"""


def run_killer(root: Path, kill_at: str, rounds: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", KILLER.format(repo=str(REPO)), str(root), kill_at, str(rounds)])


def assert_whole(root: Path) -> str:
    """CURRENT names a complete version whose every file matches its manifest; returns its name."""
    import hashlib

    name = store.current_version(root)
    folder = store.version_dir(root, name)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == name
    for file, digest in manifest["files"].items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, f"{name}/{file} is torn"
    return name


@pytest.mark.slow
def test_publish_killed_at_each_step_leaves_the_old_or_the_new_version(tmp_path):
    root = tmp_path / "store"
    assert run_killer(root, "never").wait() == 0
    assert assert_whole(root) == "v0001"
    # Killed before the symlink replaces CURRENT: the old version serves; after: the new one.
    for step, switched in (("staging", False), ("built", False), ("renamed", False), ("linked", False),
                           ("switched", True)):
        before = store.current_version(root)
        assert run_killer(root, step).wait() == -signal.SIGKILL
        now = assert_whole(root)
        assert (now != before) == switched, (step, before, now)
    # A killed publish never blocks the next one (the kernel released the lock; staging is cleaned).
    assert run_killer(root, "never").wait() == 0
    assert not list((root / store.VERSIONS).glob(".tmp-*"))


@pytest.mark.slow
def test_publish_killed_at_random_instants_never_leaves_a_mix(tmp_path):
    root = tmp_path / "store"
    assert run_killer(root, "never").wait() == 0
    rng = random.Random(1)
    for _ in range(8):
        process = run_killer(root, "never", rounds=50)
        time.sleep(rng.uniform(0.15, 0.6))  # interpreter start is ~0.1 s: kills land mid-publish
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert_whole(root)
    assert len(store.list_versions(root)) > 3
