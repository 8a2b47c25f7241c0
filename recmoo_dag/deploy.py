"""Deploying a policy of the front, as three pure steps that the deploy stage composes.

1. choose (choice.py, `choose_policy`): every front policy is measured with the search's own
   yardstick on the window the rule selects on (valid by default), next to the accuracy-only policy
   (the model's own top-k); the rule of decision.py picks one that meets the bounds, and confirms
   it on valid users the search and the rule never saw (on a new split of them, up to
   `deploy.splits`, when not).
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
rejected candidate's and version is null), with what the test window can certify at all (`gate.power`:
per bound, the true ratio that passes GATE_POWER of the time, from the candidate's own noise). It is
deterministic but for the version number.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from safetensors import SafetensorError

from recmoo_dag import store
from recmoo_dag.baselines import fit_ease
from recmoo_dag.bundle import EASE_FILE, MANIFEST_FILE, Bundle, read_bundle, write_bundle
from recmoo_dag.candidates import top_n
from recmoo_dag.choice import Choice, Figures, clamp_pools, figures, shortfalls
from recmoo_dag.config import DeployParams, EvaluationParams, Params
from recmoo_dag.data import find_log_files
from recmoo_dag.decision import GateDecision, bound_failures, gate
from recmoo_dag.errors import InputError
from recmoo_dag.exposure import ExposurePrices
from recmoo_dag.features import Features
from recmoo_dag.generator import Generator
from recmoo_dag.io import combined_digest, hash_files
from recmoo_dag.item_terms import ItemTerms
from recmoo_dag.lineage import Artifact, build_lineage, dvc_lock_hashes, lock_mismatches
from recmoo_dag.objectives import JUDGED, REPORTED, label
from recmoo_dag.policy import VARIABLES, accuracy_only_policy, id_keys, policy_vector
from recmoo_dag.results import DeployReport
from recmoo_dag.uncertainty import Bootstrap, Ratio
from recmoo_dag.windows import Cases
from recmoo_dag.yardstick import Yardstick

# metrics/deploy.json's gate.power states, per bound, the true ratio the gate certifies this often on
# the test window's users: 0.8, the usual power of a study's design (Cohen 1988).
GATE_POWER = 0.8


def policy_dict(x: np.ndarray) -> dict[str, float | int]:
    x = np.asarray(x).ravel()
    return {v.name: round(float(x[j])) if v.integer else float(x[j]) for j, v in enumerate(VARIABLES)}


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
    """The test yardstick the champion is judged on: today's candidates when it has today's weights and
    catalog, else its own generator's top-N for today's test baskets; and its own exposure prices."""
    same_model = (champion.manifest.get("identity", {}).get("model_sha256") == today["model_sha256"]
                  and np.array_equal(champion.bundle.item_ids, features.item_ids))
    cap, floor = champion_prices(champion.bundle, features)
    if same_model:
        if np.array_equal(cap, terms.price_cap) and np.array_equal(floor, terms.price_floor):
            return test
        return with_prices(test, cap, floor)
    cases = test.cases
    items, scores = champion_candidates(champion.bundle, features, cases, test.requests.n_candidates, batch_size)
    theirs = replace(terms, price_cap=cap, price_floor=floor)
    requests = theirs.requests(items, scores, terms.profiles(cases.history), id_keys(features.user_ids)[cases.users])
    return replace(test, requests=requests)


def with_prices(yard: Yardstick, cap: np.ndarray, floor: np.ndarray) -> Yardstick:
    """`yard` whose requests weigh other exposure prices, cap and floor (I + 1,) float32 in its item
    indices; every other term of its requests stays as it was."""
    items = yard.requests.items
    return replace(yard, requests=replace(yard.requests, price_cap=cap[items], price_floor=floor[items]))


def champion_prices(bundle: Bundle, features: Features) -> tuple[np.ndarray, np.ndarray]:
    """The champion's exposure prices in today's item indices, float32 as the terms hold them (items
    it never priced: 0)."""
    position = {item: idx for idx, item in enumerate(bundle.item_ids.tolist()) if idx}
    theirs = np.array([position.get(item, 0) for item in features.item_ids.tolist()])
    cap, floor = (np.where(theirs > 0, values[theirs], 0.0).astype(np.float32)
                  for values in (bundle.prices.cap, bundle.prices.floor))
    return cap, floor


def champion_candidates(bundle: Bundle, features: Features, cases: Cases, n: int,
                        batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The champion generator's top-n unseen items for today's test baskets, in today's item indices.

    The champion may know other items: histories are translated by item id (unknown items drop out
    as padding) and its scores are moved back (items it never saw score -inf).
    """
    generator = bundle.generator()
    ours = {item: idx for idx, item in enumerate(features.item_ids) if idx}
    theirs = {item: idx for idx, item in enumerate(bundle.item_ids) if idx}
    to_theirs = np.array([theirs.get(item, 0) for item in features.item_ids], dtype=np.int32)  # (I + 1,)
    shared = np.array([(ours[i], theirs[i]) for i in theirs if i in ours], dtype=np.int64).reshape(-1, 2)
    history = replace(cases.history, items=to_theirs[cases.history.items])  # today's histories, their ids
    theirs_scorer = generator.scorer(history, history, ease=bundle.ease)  # scores in the champion's ids

    def score(rows: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), features.n_items + 1), -np.inf, dtype=np.float32)  # (B, I + 1)
        out[:, shared[:, 0]] = theirs_scorer(rows)[:, shared[:, 1]]
        return out

    return top_n(score, cases.history, features.n_items, n, batch_size)


@dataclass(frozen=True)
class Verdict:
    decision: GateDecision
    accuracy_only: Figures  # the accuracy-only policy on test
    candidate: Figures | None  # the chosen policy on test
    champion: Figures | None  # the champion on test
    champion_ratio: dict[str, Ratio] | None  # the champion over accuracy-only, on test
    ratio: dict[str, Ratio] | None  # the candidate (or the fallback) over accuracy-only, on test
    policy: np.ndarray | None  # what a promotion publishes: the chosen policy, or the fallback
    identity: dict  # identity() of the generator and features, with that policy
    fallback: dict | None  # why the accuracy-only policy is served instead, or None
    needed: dict[str, float] | None  # per bound, the true test ratio the gate certifies GATE_POWER of the
    # time on users as noisy as the candidate's (Ratio.needed); None without a candidate


def judge(choice: Choice, test: Yardstick, champion: Champion | None, champion_yard: Yardstick | None,
          generator_and_data: dict, cfg: DeployParams, k: int, evaluation: EvaluationParams, seed: int) -> Verdict:
    """The gate's decision on the test window (decision.gate), every comparison paired over the test
    users. With nothing served yet and `deploy.fallback: accuracy_only`, a refused or missing
    candidate makes way for the accuracy-only policy (the generator's own top-k), recording which
    bound failed, where and by how much."""
    boot = Bootstrap(len(test.user_index[0]), evaluation.replicates, seed)
    level, confidence = evaluation.level, cfg.confidence
    accuracy_only = figures(test, accuracy_only_policy(k), boot, level)
    candidate = figures(test, choice.policy, boot, level) if choice.policy is not None else None
    ratio = candidate.ratios(accuracy_only, level, confidence) if candidate else None
    needed = {name: ratio[name].needed(bound, GATE_POWER) for name, bound in cfg.min_ratio.items()} if ratio else None
    served = served_ratio = versus = None
    misses: list[str] = []
    if champion is not None:
        policy = clamp_pools(policy_vector(champion.bundle.variables), k, test.requests.n_candidates)
        served = figures(champion_yard, policy, boot, level)
        served_ratio = served.ratios(accuracy_only, level, confidence)
        misses = bound_failures(served_ratio, cfg.min_ratio, k)
        versus = candidate.ratios(served, level, confidence) if candidate else None
    today = {**generator_and_data, "policy": policy_dict(choice.policy) if choice.policy is not None else None}
    decision = gate(ratio, versus if champion else None, misses, cfg.min_ratio, cfg.tolerance, k,
                    champion.version if champion else None,
                    identical=champion is not None and champion.manifest.get("identity") == today,
                    no_candidate_reason=choice.reason)
    if decision.promoted or champion is not None or cfg.fallback == "none":
        return Verdict(decision, accuracy_only, candidate, served, served_ratio, ratio, choice.policy, today, None,
                       needed)
    failed = choice.shortfalls if candidate is None else shortfalls(ratio, cfg.min_ratio, k, "test")
    fallback = accuracy_only_policy(k)
    why = f"fallback to the accuracy-only policy (deploy.fallback): {decision.reason.removesuffix('; nothing deployed')}"
    return Verdict(GateDecision(True, why), accuracy_only, candidate, served, served_ratio,
                   accuracy_only.ratios(accuracy_only, level, confidence), fallback,
                   {**generator_and_data, "policy": policy_dict(fallback)},
                   {"policy": "accuracy_only", "failed": [f for f in failed if f["failed"]] or failed}, needed)


# ------------------------------------------------------------------------------------------ 3. publish

def lineage_chain(params: Params) -> list[Artifact]:
    """raw -> ingested -> validated -> features -> item text, tuned values -> model -> candidates ->
    front, in pipeline order: every input the served version was built from."""
    inter, item_files = find_log_files(Path(params.data.raw_dir), params.data.format, params.data.generic)
    return [
        Artifact("raw logs", "fetch", tuple(p.as_posix() for p in inter + item_files)),
        Artifact("ingested", "ingest", (params.data.interactions, params.data.items)),
        Artifact("validated", "validate", (params.validation.interactions, params.validation.items)),
        Artifact("features", "features", (params.features.dir,)),
        Artifact("item text", "item_text", (params.item_text.dir,)),
        Artifact("tuned values", "tune", (params.tune.chosen,)),
        Artifact("model", "train", (params.train.model_dir,)),
        Artifact("candidates", "candidates", (params.candidates.path,)),
        Artifact("exposure prices", "exposure", (params.exposure.prices,)),
        Artifact("front", "search", (params.search.front, *retry_fronts(params))),
    ]


def retry_fronts(params: Params) -> list[str]:
    """The fronts the search wrote for the rule's retries (deploy.splits): only those it needed."""
    return [front for front in map(params.search.front_of, range(1, params.deploy.searched_splits))
            if Path(front).is_file()]


def refuse_inputs_unlike_dvc_lock(params: Params, root: Path = Path(".")) -> None:
    """Deploy nothing built from bytes dvc.lock does not name: a DVC remote that served altered
    objects passes `dvc pull` and `dvc status` (both trust the remote and the cache), and the new
    manifest would hash the altered bytes as if they were the pipeline's."""
    problems = lock_mismatches(dvc_lock_hashes(root), [artifact.stage for artifact in lineage_chain(params)], root)
    if problems:
        more = f" (and {len(problems) - 1} more: recmoo lineage --verify lists them)" if len(problems) > 1 else ""
        raise InputError(f"refusing to deploy: {problems[0]}{more}; re-run the stage (dvc repro --force <stage>) "
                         "or pull from a remote with `verify true`")


def record(choice: Choice, verdict: Verdict, champion: Champion | None, cfg: DeployParams, k: int) -> dict:
    """The decision half of a new version's manifest (and of `recmoo serve`'s /version)."""
    deployed = verdict.accuracy_only if verdict.fallback else verdict.candidate
    return {"rule": f"{cfg.rule} on {cfg.select_on}: {choice.reason}", "policy": verdict.identity["policy"],
            "identity": verdict.identity, "fallback": verdict.fallback,
            "gate": {"promoted": verdict.decision.promoted, "reason": verdict.decision.reason},
            "test": {"accuracy_only": labelled_figures(verdict.accuracy_only, k),
                     "deployed": labelled_figures(deployed, k), "ratio": labelled_ratios(verdict.ratio, k)},
            "valid": {"ratio": labelled_ratios(choice.confirmed, k)},
            "champion": {"version": champion.version if champion else None,
                         "test": labelled_figures(verdict.champion, k)}}


def labelled_figures(figures_: Figures | None, k: int) -> dict | None:
    """{"ndcg@10": value, "ndcg@10_ci": [low, high], ...} of one policy's figures."""
    if figures_ is None:
        return None
    return {key: value for name in REPORTED for key, value in (
        (label(name, k), figures_.values[name]), (f"{label(name, k)}_ci", list(figures_.intervals[name])))}


def labelled_ratios(ratios: dict[str, Ratio] | None, k: int) -> dict | None:
    if ratios is None:
        return None
    return {key: value for name in JUDGED for key, value in (
        (label(name, k), ratios[name].value), (f"{label(name, k)}_ci", [ratios[name].low, ratios[name].high]))}


def build_version(folder: Path, name: str, params: Params, features: Features, generator: Generator,
                  vectors: np.ndarray, prices: ExposurePrices, policy: np.ndarray, n_candidates: int,
                  decision: dict) -> None:
    """Write a complete version into the staging `folder` (store.publish renames it into place)."""
    # Known users are served from their whole sequence (train + valid + test), precomputed here, and
    # EASE is fit on those sequences too: the service knows everything the log holds.
    whole = features.whole()
    ease = fit_ease(whole, features.n_items, generator.ease_lambda) if generator.uses_ease else None
    cand_items, cand_scores = top_n(generator.scorer(whole, whole, ease), whole, features.n_items, n_candidates,
                                    params.candidates.batch_size)
    try:
        write_bundle(folder, params.train.model_dir, policy_dict(policy), params.policy.k, decision["rule"],
                     item_ids=features.item_ids, titles=features.titles, train_counts=features.train_counts,
                     item_vectors=vectors, n_users=features.n_users, user_ids=features.user_ids,
                     indptr=features.indptr, history=features.items,
                     opens=features.basket_starts == np.arange(len(features.items)), cand_items=cand_items,
                     cand_scores=cand_scores, ease=ease, prices=prices)
    except SafetensorError as err:
        # safetensors reports a failed write (disk full, read-only) as its own error, "... (os error 28)";
        # as the OSError it is, store.publish names the store and the reason like any other failed write.
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), str(folder / EASE_FILE)) from err
    manifest = {"version": name, **decision, "exposure": {"settings": prices.settings, "solves": prices.solves},
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
                          "test": labelled_figures(verdict.candidate, k)},
            "fallback": verdict.fallback, "champion": champion.version if champion else None}


def report(served: str | None, choice: Choice, verdict: Verdict, champion: Champion | None, k: int) -> DeployReport:
    """metrics/deploy.json: what is served after the run (see the module docstring). The valid
    ratios are those of a policy this run chose and promoted (None when it kept the champion or fell
    back): the figures its choice was confirmed on."""
    ratios = verdict.ratio
    if verdict.decision.promoted:
        policy = verdict.identity["policy"]
        shown = verdict.accuracy_only if verdict.fallback else verdict.candidate
    elif champion is not None:
        policy, shown, ratios = champion.bundle.variables, verdict.champion, verdict.champion_ratio
    else:  # nothing served: describe the rejected candidate (or nothing at all)
        policy, shown = verdict.identity["policy"] or {}, verdict.candidate
    confirmed = choice.confirmed if verdict.decision.promoted and not verdict.fallback else None
    return DeployReport(
        k, served, policy, verdict.fallback, verdict.accuracy_only.values, verdict.accuracy_only.intervals,
        shown.values if shown else dict.fromkeys(REPORTED), shown.intervals if shown else dict.fromkeys(REPORTED),
        {n: r.value for n, r in ratios.items()} if ratios else None,
        {n: (r.low, r.high) for n, r in ratios.items()} if ratios else None,
        {n: r.value for n, r in confirmed.items()} if confirmed else None,
        {n: (r.low, r.high) for n, r in confirmed.items()} if confirmed else None,
        verdict.decision.promoted, verdict.decision.reason, GATE_POWER, verdict.needed)
