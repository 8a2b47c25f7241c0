"""Deploying a policy of the front, as three pure steps that the deploy stage composes.

1. choose (`choose_policy`): every front policy is measured with the search's own yardstick on the
   window the rule selects on (valid by default), next to the accuracy-only policy (the model's own
   top-k); the rule of decision.py picks one that meets the bounds.
2. judge (`judge`): the chosen policy, the accuracy-only policy and the champion (the served
   version's policy *and model*, re-scored on today's test histories, `champion_yardstick`) are
   measured on the test window; the gate of decision.py promotes or keeps the champion. When
   nothing is served yet and no policy qualifies (none met the bounds on valid, or the chosen one
   misses them on test), `deploy.fallback: accuracy_only` serves the generator's own top-k instead,
   and the record says which bound failed, where and by how much: a first run always serves.
3. publish (`build_version`, run inside `store.publish`): a self-contained version folder
   (bundle.py) with its lineage manifest; CURRENT switches to it atomically.

metrics/deploy.json (`report`) describes what is served after the run: its version, its policy and
its test figures next to accuracy-only's, and the gate's decision (when the gate keeps the champion,
the reason carries the rejected candidate's numbers; `fallback` says why the accuracy-only policy is
served, when it is; when nothing is served, with `deploy.fallback: none`, policy and figures are the
rejected candidate's and version is null). It is deterministic but for the version number.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from recmoo_dag import store
from recmoo_dag.baselines import fit_ease
from recmoo_dag.bundle import MANIFEST_FILE, Bundle, read_bundle, write_bundle
from recmoo_dag.candidates import top_n
from recmoo_dag.config import DeployParams, Params
from recmoo_dag.data import find_log_files
from recmoo_dag.decision import GateDecision, choose, gate, judged, ndcg_lower_bound, nearest_to_bounds
from recmoo_dag.features import Features
from recmoo_dag.generator import Generator
from recmoo_dag.io import combined_digest, hash_files
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.lineage import Artifact, build_lineage
from recmoo_dag.objectives import JUDGED, label, labelled
from recmoo_dag.policy import POOL, VARIABLES, accuracy_only_policy, id_keys, policy_vector
from recmoo_dag.results import DeployReport
from recmoo_dag.yardstick import Yardstick


def measure(yard: Yardstick, policies: np.ndarray) -> np.ndarray:
    """The JUDGED objectives of each policy, by the search's own Yardstick: (B, d) -> (B, 5)."""
    return yard.objectives(np.atleast_2d(policies))[:, :len(JUDGED)]


def named(values: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(JUDGED, values)}


def clamp_pools(policies: np.ndarray, k: int, n_candidates: int) -> np.ndarray:
    """Pools within [k, N]: a front found with more candidates than these still applies. (B, d)"""
    out = np.atleast_2d(np.asarray(policies, dtype=np.float64)).copy()
    out[:, POOL] = np.clip(np.round(out[:, POOL]), k, n_candidates)
    return out


def policy_dict(x: np.ndarray) -> dict[str, float | int]:
    x = np.asarray(x).ravel()
    return {v.name: round(float(x[j])) if v.integer else float(x[j]) for j, v in enumerate(VARIABLES)}


# ------------------------------------------------------------------------------------------- 1. choose

@dataclass(frozen=True)
class Choice:
    policy: np.ndarray | None  # (d,) pools clamped to the candidates there are; None: no policy qualified
    reason: str  # the rule's account of its pick, or which bounds no policy met
    shortfalls: list[dict]  # when none qualified: per bound, the ratio of the policy nearest to them all


def choose_policy(front: np.ndarray, yard: Yardstick, cfg: DeployParams, k: int) -> Choice:
    """The rule's pick among the front's policies (P, d), measured on `yard` (the select_on window)."""
    policies = clamp_pools(front, k, yard.requests.n_candidates)
    baseline = accuracy_only_policy(k)
    ndcg_lower = None  # confidence 0.5 judges the point estimates themselves
    if cfg.confidence > 0.5:
        ndcg_lower = ndcg_lower_bound(yard.user_ndcg(policies), yard.user_ndcg(baseline)[0], cfg.confidence)
    F, accuracy_only = measure(yard, policies), measure(yard, baseline)[0]
    index, why = choose(cfg.rule, F, accuracy_only, cfg.min_ratio, cfg.maximize, cfg.weights, k, ndcg_lower)
    if index is not None:
        return Choice(policies[index], why, [])
    nearest = nearest_to_bounds(F, accuracy_only, cfg.min_ratio, ndcg_lower)
    reached = {name: float(values[nearest]) for name, values in judged(F, cfg.min_ratio, ndcg_lower).items()}
    return Choice(None, why, shortfalls(reached, named(accuracy_only), cfg.min_ratio, k, where="valid"))


# -------------------------------------------------------------------------------------------- 2. judge

@dataclass(frozen=True)
class Champion:
    """The served version, read once."""

    version: str
    bundle: Bundle
    manifest: dict


def load_champion(store_dir: str | Path) -> Champion | None:
    version = store.current_version(store_dir)
    if version is None:
        return None
    return Champion(version, read_bundle(store.version_dir(store_dir, version)), store.read_manifest(store_dir, version))


def identity(model_dir: str | Path, features_dir: str | Path) -> dict:
    """What makes a deployment the same as another, but for its policy: the generator (transformer,
    choice) and the features."""
    return {"model_sha256": combined_digest(hash_files([str(model_dir)])),
            "features_sha256": combined_digest(hash_files([str(features_dir)]))}


def champion_yardstick(champion: Champion, test: Yardstick, features: Features, terms: ItemTerms,
                       batch_size: int, today: dict) -> Yardstick:
    """The test yardstick with the champion's candidates: today's when it has today's weights and
    catalog, else its own generator's top-N for today's test histories."""
    same_model = (champion.manifest.get("identity", {}).get("model_sha256") == today["model_sha256"]
                  and np.array_equal(champion.bundle.item_ids, features.item_ids))
    if same_model:
        return test
    items, scores = champion_candidates(champion.bundle, features, test.requests.n_candidates, batch_size)
    indptr, history = features.history_before("test")
    return replace(test, requests=terms.requests(items, scores, terms.profiles(indptr, history), id_keys(features.user_ids)))


def champion_candidates(bundle: Bundle, features: Features, n: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The champion generator's top-n unseen items for today's test histories, in today's item indices.

    The champion may know other items: histories are translated by item id (unknown items drop out
    as padding) and its scores are moved back (items it never saw score -inf).
    """
    generator = bundle.generator()
    ours = {item: idx for idx, item in enumerate(features.item_ids) if idx}
    theirs = {item: idx for idx, item in enumerate(bundle.item_ids) if idx}
    to_theirs = np.array([theirs.get(item, 0) for item in features.item_ids], dtype=np.int64)  # (I + 1,)
    shared = np.array([(ours[i], theirs[i]) for i in theirs if i in ours], dtype=np.int64).reshape(-1, 2)
    indptr, items = features.history_before("test")
    theirs_scorer = generator.scorer(indptr, to_theirs[items], ease=bundle.ease)  # scores in the champion's ids

    def score(users: np.ndarray) -> np.ndarray:
        out = np.full((len(users), features.n_items + 1), -np.inf, dtype=np.float32)  # (B, I + 1)
        out[:, shared[:, 0]] = theirs_scorer(users)[:, shared[:, 1]]
        return out

    return top_n(score, indptr, items, features.n_items, n, batch_size)


@dataclass(frozen=True)
class Verdict:
    decision: GateDecision
    accuracy_only: dict[str, float]  # accuracy-only on test, by objective name
    candidate: dict[str, float] | None  # the chosen policy on test
    champion: dict[str, float] | None  # the champion on test
    policy: np.ndarray | None  # what a promotion publishes: the chosen policy, or the fallback
    identity: dict  # identity() of the generator and features, with that policy
    fallback: dict | None  # why the accuracy-only policy is served instead, or None


def judge(choice: Choice, test: Yardstick, champion: Champion | None, champion_yard: Yardstick | None,
          generator_and_data: dict, cfg: DeployParams, k: int) -> Verdict:
    """The gate's decision on the test window (decision.gate). With nothing served yet and
    `deploy.fallback: accuracy_only`, a refused or missing candidate makes way for the accuracy-only
    policy (the generator's own top-k), recording which bound failed, where and by how much."""
    accuracy_only = named(measure(test, accuracy_only_policy(k))[0])
    candidate = named(measure(test, choice.policy)[0]) if choice.policy is not None else None
    served = None
    if champion is not None:
        policy = clamp_pools(policy_vector(champion.bundle.variables), k, test.requests.n_candidates)
        served = named(measure(champion_yard, policy)[0])
    today = {**generator_and_data, "policy": policy_dict(choice.policy) if choice.policy is not None else None}
    decision = gate(candidate, accuracy_only, served, cfg.min_ratio, cfg.tolerance, k,
                    champion.version if champion else None,
                    identical=champion is not None and champion.manifest.get("identity") == today,
                    no_candidate_reason=choice.reason)
    if decision.promoted or champion is not None or cfg.fallback == "none":
        return Verdict(decision, accuracy_only, candidate, served, choice.policy, today, None)
    failed = choice.shortfalls if candidate is None else shortfalls(candidate, accuracy_only, cfg.min_ratio, k, "test")
    fallback = accuracy_only_policy(k)
    why = f"fallback to the accuracy-only policy (deploy.fallback): {decision.reason.removesuffix('; nothing deployed')}"
    return Verdict(GateDecision(True, why), accuracy_only, candidate, served, fallback,
                   {**generator_and_data, "policy": policy_dict(fallback)},
                   {"policy": "accuracy_only", "failed": [f for f in failed if f["failed"]] or failed})


def shortfalls(values: dict[str, float], accuracy_only: dict[str, float], min_ratio: dict[str, float], k: int,
               where: str) -> list[dict]:
    """Each bound as measured: the ratio to accuracy-only reached, the one required, and by how much
    it is missed (0 when met)."""
    out = []
    for name, required in min_ratio.items():
        ratio = values[name] / accuracy_only[name] if accuracy_only[name] else float("inf")
        out.append({"objective": label(name, k), "where": where, "ratio": round(float(ratio), 6),
                    "required": required, "failed": bool(ratio < required),
                    "missed_by": round(float(max(required - ratio, 0.0)), 6)})
    return out


# ------------------------------------------------------------------------------------------ 3. publish

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
        Artifact("front", "search", (params.search.front,)),
    ]


def record(choice: Choice, verdict: Verdict, champion: Champion | None, cfg: DeployParams, k: int) -> dict:
    """The decision half of a new version's manifest."""
    deployed = verdict.accuracy_only if verdict.fallback else verdict.candidate
    return {"rule": f"{cfg.rule} on {cfg.select_on}: {choice.reason}", "policy": verdict.identity["policy"],
            "identity": verdict.identity, "fallback": verdict.fallback,
            "gate": {"promoted": verdict.decision.promoted, "reason": verdict.decision.reason},
            "test": {"accuracy_only": labelled(verdict.accuracy_only.values(), k),
                     "deployed": labelled(deployed.values(), k)},
            "champion": {"version": champion.version if champion else None,
                         "test": labelled(verdict.champion.values(), k) if verdict.champion else None}}


def build_version(folder: Path, name: str, params: Params, features: Features, generator: Generator,
                  vectors: np.ndarray, policy: np.ndarray, n_candidates: int, decision: dict) -> None:
    """Write a complete version into the staging `folder` (store.publish renames it into place)."""
    # Known users are served from their whole sequence (train + valid + test), precomputed here, and
    # EASE is fit on those sequences too: the service knows everything the log holds.
    ease = fit_ease(features.indptr, features.items, features.n_items, generator.ease_lambda) \
        if generator.uses_ease else None
    cand_items, cand_scores = top_n(generator.scorer(features.indptr, features.items, ease), features.indptr,
                                    features.items, features.n_items, n_candidates, params.candidates.batch_size)
    write_bundle(folder, params.train.model_dir, policy_dict(policy), params.policy.k, decision["rule"],
                 item_ids=features.item_ids, titles=features.titles, train_counts=features.train_counts,
                 item_vectors=vectors, n_users=features.n_users, user_ids=features.user_ids,
                 indptr=features.indptr, history=features.items, cand_items=cand_items, cand_scores=cand_scores,
                 ease=ease)
    manifest = {"version": name, **decision,
                **build_lineage(lineage_chain(params), params.model_dump(by_alias=True, mode="json")),
                "deployed_files": hash_files([p.name for p in sorted(folder.iterdir())], folder)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def decision_log(served: str | None, choice: Choice, verdict: Verdict, champion: Champion | None,
                 cfg: DeployParams, k: int) -> dict:
    """One line of the store's decisions.jsonl."""
    return {"event": "deploy", "at": datetime.now(UTC).isoformat(timespec="seconds"), "served": served,
            "promoted": verdict.decision.promoted, "reason": verdict.decision.reason,
            "rule": f"{cfg.rule} on {cfg.select_on}: {choice.reason}",
            "candidate": {"policy": policy_dict(choice.policy) if choice.policy is not None else None,
                          "test": labelled(verdict.candidate.values(), k) if verdict.candidate else None},
            "fallback": verdict.fallback, "champion": champion.version if champion else None}


def report(served: str | None, verdict: Verdict, champion: Champion | None, k: int) -> DeployReport:
    """metrics/deploy.json: what is served after the run (see the module docstring)."""
    if verdict.decision.promoted:
        policy = verdict.identity["policy"]
        figures = verdict.accuracy_only if verdict.fallback else verdict.candidate
    elif champion is not None:
        policy, figures = champion.bundle.variables, verdict.champion
    else:  # nothing served: describe the rejected candidate (or nothing at all)
        policy, figures = verdict.identity["policy"] or {}, verdict.candidate
    return DeployReport(k, served, policy, verdict.fallback, verdict.accuracy_only,
                        figures or dict.fromkeys(JUDGED), verdict.decision.promoted, verdict.decision.reason)
