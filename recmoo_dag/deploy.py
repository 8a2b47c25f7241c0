"""The deploy stage: pick a policy of the front, gate it against the champion, publish it atomically.

Reads the front, the candidates, the model and the features. Every front policy is evaluated again
with `policy.rerank` on the context the rule selects on (valid by default) and the chosen one on the
test context, next to the accuracy-only policy (the model's own top-10) and the champion: the
served version's policy *and model*, re-scored on the same test histories and measured with the
same yardsticks. When the gate promotes, a self-contained version (recmoo_dag/bundle.py) with its
lineage manifest is published into the store (recmoo_dag/store.py) and CURRENT switches to it.

metrics/deploy.json describes what is served after the run: its version, its policy and its test
figures next to accuracy-only's, and the gate's decision (when the gate keeps the champion, the
reason carries the rejected candidate's numbers; when nothing is served yet, policy and figures are
the rejected candidate's, and version is null). It is deterministic but for the version number.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from recmoo_dag import store
from recmoo_dag.bundle import MANIFEST_FILE, read_bundle, write_bundle
from recmoo_dag.candidates import top_n
from recmoo_dag.config import Params
from recmoo_dag.data import find_log_files
from recmoo_dag.decision import OBJECTIVES, K, as_dict, choose, gate, ndcg_lower_bound
from recmoo_dag.evaluate import left_padded, model_scorer
from recmoo_dag.features import Features, load_features
from recmoo_dag.io import write_json
from recmoo_dag.lineage import Artifact, build_lineage, combined_digest, hash_files, sha256_file
from recmoo_dag.model import WEIGHTS_FILE, SeqRecModel, load_model
from recmoo_dag.pareto_front import item_vectors, yardsticks
from recmoo_dag.policy import NAMES, POOL, VARIABLES, accuracy_only, build_context, policy_vector
from recmoo_dag.search import OBJECTIVES as SEARCH_OBJECTIVES
from recmoo_dag.search import Yardstick

# Where each objective of metrics/deploy.json sits among the search's objectives.
SEARCH_COLUMNS = [SEARCH_OBJECTIVES.index(name.removesuffix("@10")) for name in OBJECTIVES]


def run(params: Params) -> dict:
    """`recmoo deploy`. Returns the payload written to deploy.metrics."""
    cfg = params.deploy
    if params.policy.k != K:
        raise ValueError(f"policy.k is {params.policy.k} but metrics/deploy.json reports @{K} objectives")
    features = load_features(params.features.dir)
    model = load_model(params.train.model_dir)
    if model.n_items != features.n_items:
        raise ValueError(f"{params.train.model_dir} has {model.n_items} items but {params.features.dir} has "
                         f"{features.n_items}: re-run `dvc repro` so train and candidates follow the features")
    policies = read_front(front_path(params))
    valid_yard, test_yard = yardsticks(params)  # the search's contexts and objective definitions
    vectors = item_vectors(features, params.policy.similarity, params.train.model_dir)
    select_yard = test_yard if cfg.select_on == "test" else valid_yard
    n_cand = test_yard.ctx.n_candidates
    front = clamp_pools(policies, n_cand)
    F = measure(select_yard, front)  # (P, m)
    ndcg_lower = ndcg_lower_bound(select_yard.user_ndcg(front), select_yard.user_ndcg(accuracy_only(K))[0],
                                  cfg.confidence) if cfg.confidence > 0.5 else None  # 0.5: F's own values
    index, why = choose(cfg.rule, F, measure(select_yard, accuracy_only(K))[0], cfg.min_ratio, cfg.maximize,
                        cfg.weights, ndcg_lower)
    candidate = clamp_pools(policies[index], n_cand)[0] if index is not None else None
    reference_test = as_dict(measure(test_yard, accuracy_only(K))[0])
    candidate_test = as_dict(measure(test_yard, candidate)[0]) if candidate is not None else None
    identity = {"model_sha256": sha256_file(Path(params.train.model_dir) / WEIGHTS_FILE),
                "features_sha256": combined_digest(hash_files([params.features.dir])),
                "policy": policy_dict(candidate) if candidate is not None else None}

    with store.locked(cfg.store):
        champion_version = store.current_version(cfg.store)
        champion_test, champion_policy = None, None
        if champion_version is not None:
            folder = store.version_dir(cfg.store, champion_version)
            champion = read_bundle(folder)
            champion_policy = champion.variables
            manifest = store.read_manifest(cfg.store, champion_version)
            same_model = (manifest.get("identity", {}).get("model_sha256") == identity["model_sha256"]
                          and np.array_equal(champion.item_ids, features.item_ids))
            # Same weights and catalog: its test candidates are today's; else re-score with its model.
            yard = test_yard if same_model else replace(test_yard, ctx=build_context(
                *champion_candidates(folder, features, n_cand, params.candidates.batch_size), vectors,
                test_yard.sim, features.train_counts, features.history("test"), features.user_ids, features.item_ids,
                features.n_users))
            champion_test = as_dict(measure(yard, clamp_pools(policy_vector(champion_policy), n_cand))[0])
            identical = manifest.get("identity") == identity
        else:
            identical = False
        decision = gate(candidate_test, reference_test, champion_test, cfg.min_ratio, cfg.tolerance,
                        champion_version, identical, no_candidate_reason=why)
        served = champion_version
        if decision.promoted:
            record = {"rule": f"{cfg.rule} on {cfg.select_on}: {why}", "policy": identity["policy"],
                      "identity": identity, "gate": {"promoted": True, "reason": decision.reason},
                      "test": {"accuracy_only": reference_test, "deployed": candidate_test},
                      "champion": {"version": champion_version, "test": champion_test}}
            served = store.publish(cfg.store, lambda folder, name: build_version(
                folder, name, params, features, model, vectors, candidate, n_cand, record))
        store.log_decision(cfg.store, {
            "event": "deploy", "at": _now(), "served": served, "promoted": decision.promoted,
            "reason": decision.reason, "rule": f"{cfg.rule} on {cfg.select_on}: {why}",
            "candidate": {"policy": identity["policy"], "test": candidate_test}, "champion": champion_version})

    if decision.promoted:
        shown_policy, shown_test = identity["policy"], candidate_test
    elif champion_version is not None:
        shown_policy, shown_test = champion_policy, champion_test
    else:  # nothing served: describe the rejected candidate (or nothing at all)
        shown_policy = identity["policy"] or {}
        shown_test = candidate_test or dict.fromkeys(OBJECTIVES)
    payload = {"version": served, "policy": shown_policy,
               "test": {"accuracy_only": reference_test, "deployed": shown_test},
               "gate": {"promoted": decision.promoted, "reason": decision.reason}}
    write_json(cfg.metrics, payload)
    verb = f"promoted {served}" if decision.promoted else f"kept {served or 'nothing'}"
    print(f"deploy: {verb} ({decision.reason}); rule {cfg.rule}: {why}")
    return payload


def front_path(params: Params) -> Path:
    return Path(params.search.front)


def measure(yard: Yardstick, policies: np.ndarray) -> np.ndarray:
    """OBJECTIVES of each policy, computed by the search's own Yardstick: (B, d) -> (B, m)."""
    return yard.objectives(np.atleast_2d(policies))[:, SEARCH_COLUMNS]


def read_front(path: Path) -> np.ndarray:
    """The decision variables of the front's policies, in policy.NAMES order: (P, d)."""
    front = pd.read_csv(path)
    missing = [name for name in NAMES if name not in front.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; expected the decision variables {list(NAMES)}")
    if front.empty:
        raise ValueError(f"{path}: the front is empty: re-run `recmoo pareto_front`")
    return front[list(NAMES)].to_numpy(dtype=np.float64)


def clamp_pools(policies: np.ndarray, n_candidates: int) -> np.ndarray:
    """Pools within [K, N]: a front found with more candidates than these still applies."""
    out = np.atleast_2d(np.asarray(policies, dtype=np.float64)).copy()
    out[:, POOL] = np.clip(np.round(out[:, POOL]), K, n_candidates)
    return out


def policy_dict(x: np.ndarray) -> dict[str, float | int]:
    x = np.asarray(x).ravel()
    return {v.name: round(float(x[j])) if v.integer else float(x[j]) for j, v in enumerate(VARIABLES)}


def champion_candidates(folder: Path, features: Features, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The champion model's top-n unseen items for today's test histories, in today's item indices.

    The champion may know other items: histories are translated by item id (unknown items drop out
    as padding) and its scores are moved back (items it never saw score -inf).
    """
    bundle = read_bundle(folder)
    model = load_model(bundle.model_dir)
    ours = {item: idx for idx, item in enumerate(features.item_ids) if idx}
    theirs = {item: idx for idx, item in enumerate(bundle.item_ids) if idx}
    to_theirs = np.array([theirs.get(item, 0) for item in features.item_ids], dtype=np.int64)  # (I + 1,)
    shared = np.array([(ours[i], theirs[i]) for i in theirs if i in ours], dtype=np.int64).reshape(-1, 2)
    indptr, items = features.history("test")

    def score(users: np.ndarray) -> np.ndarray:
        import torch

        seq = to_theirs[left_padded(indptr, items, users, model.max_len)]  # (B, L) in the champion's ids
        theirs_scores = model.score_next(torch.from_numpy(seq)).numpy()  # (B, I' + 1)
        out = np.full((len(users), features.n_items + 1), -np.inf, dtype=np.float32)  # (B, I + 1)
        out[:, shared[:, 0]] = theirs_scores[:, shared[:, 1]]
        return out

    return top_n(score, indptr, items, features.n_items, n, batch_size)


def lineage_chain(params: Params) -> list[Artifact]:
    """raw -> ingested -> validated -> features -> model -> candidates -> front, in pipeline order."""
    inter, item_files = find_log_files(Path(params.data.raw_dir), params.data.format, params.data.generic)
    return [
        Artifact("raw logs", "fetch", tuple(p.as_posix() for p in inter + item_files)),
        Artifact("ingested", "ingest", (params.data.interactions, params.data.items)),
        Artifact("validated", "validate", (params.validation.interactions, params.validation.items)),
        Artifact("features", "features", (params.features.dir,)),
        Artifact("model", "train", (params.train.model_dir,)),
        Artifact("candidates", "candidates", (params.candidates.path,)),
        Artifact("front", "pareto_front", (str(front_path(params)),)),
    ]


def build_version(folder: Path, name: str, params: Params, features: Features, model: SeqRecModel,
                  vectors: np.ndarray, policy: np.ndarray, n_candidates: int, record: dict) -> None:
    """Write a complete version into the staging `folder` (store.publish renames it into place)."""
    # Known users are served from their whole sequence (train + valid + test), precomputed here.
    cand_items, cand_scores = top_n(model_scorer(model, features.indptr, features.items), features.indptr,
                                    features.items, features.n_items, n_candidates, params.candidates.batch_size)
    write_bundle(folder, params.train.model_dir, policy_dict(policy), K, record["rule"],
                 item_ids=features.item_ids, titles=features.titles, train_counts=features.train_counts,
                 item_vectors=vectors, n_users=features.n_users, user_ids=features.user_ids,
                 indptr=features.indptr, history=features.items, cand_items=cand_items, cand_scores=cand_scores)
    manifest = {"version": name, **record,
                **build_lineage(lineage_chain(params), params.model_dump(by_alias=True, mode="json")),
                "deployed_files": hash_files([p.name for p in sorted(folder.iterdir())], folder)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
