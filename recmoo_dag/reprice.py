"""Refresh the served version's exposure prices without a retrain: `recmoo reprice`, and the Dagster
job and schedule `reprice` (recmoo_dag/defs).

Prices are solved across every list the service ranks, so they go stale as users' histories move:
each event the service takes changes that user's candidates (their next request reads it, events.py),
and the lists fill up with other items than those the prices were solved for. A retrain fixes that
and much more, at the cost of the whole pipeline; repricing fixes only the prices, in seconds:

1. the served lists: every known user's history in the served version, with the events the service
   took since that version was built and that it was not trained on (the rolled batch files under
   data.incoming_dir, as the sensor sees them; items the version does not know drop out, as when
   serving), then the version's own generator's top-N for the users whose history grew (the others
   keep the version's precomputed candidates: the lists the service ranks for them);
2. both price solves of exposure.py on those candidates, with today's `exposure` settings;
3. the candidate version is the champion with those prices (same model, policy, catalog and users),
   judged on today's test window like any deploy (deploy.judge): the bounds against the
   accuracy-only policy, non-inferiority against the champion with its own prices; published only
   when promoted. Its manifest keeps the champion's lineage and adds the batch files it priced from
   ("served events"; its rule stays the one that chose the policy); the batches stay untrained, so
   sessions keep reading them.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

import numpy as np

from recmoo_dag import store
from recmoo_dag.bundle import EXPOSURE_FILE, MANIFEST_FILE, Bundle
from recmoo_dag.candidates import load_candidates, top_n
from recmoo_dag.choice import Choice, clamp_pools
from recmoo_dag.config import Params
from recmoo_dag.deploy import (
    Champion,
    Verdict,
    champion_prices,
    champion_yardstick,
    identity,
    judge,
    labelled_figures,
    labelled_ratios,
    load_champion,
    with_prices,
)
from recmoo_dag.errors import InputError
from recmoo_dag.events import read_batch, untrained_batch_files
from recmoo_dag.exposure import ExposurePrices, solve_exposure
from recmoo_dag.features import load_features
from recmoo_dag.generator import load_generator
from recmoo_dag.io import hash_files
from recmoo_dag.item_terms import training_terms
from recmoo_dag.item_text import text_vectors_if_any
from recmoo_dag.lineage import Artifact, lineage_link, params_digest
from recmoo_dag.model import item_embeddings
from recmoo_dag.policy import EXPOSURE_CAP, EXPOSURE_FLOOR, policy_vector
from recmoo_dag.windows import histories_of
from recmoo_dag.yardstick import yardsticks

SERVED_EVENTS = "served events"  # the manifest link naming the batch files a repriced version was priced from


@dataclass(frozen=True)
class ServedLists:
    """The candidates the service ranks for every known user today."""

    items: np.ndarray  # (U, N) int32, the version's item indices
    scores: np.ndarray  # (U, N) float32
    batches: dict[str, Path]  # the untrained batch files read, by name
    events: int  # their events on known users and known items: what moved the histories
    users_moved: int  # users whose candidates were recomputed


def served_lists(bundle: Bundle, batches: dict[str, Path], params: Params) -> ServedLists:
    """Step 1 of the module docstring."""
    user_row = {user: row for row, user in enumerate(bundle.user_ids.tolist())}
    item_index = {item: idx for idx, item in enumerate(bundle.item_ids.tolist()) if idx}
    added: dict[int, list[int]] = {}
    for path in batches.values():
        for event in read_batch(path, params.data):
            if event.user_id in user_row and event.item_id in item_index:
                added.setdefault(user_row[event.user_id], []).append(item_index[event.item_id])
    items, scores = bundle.cand_items.copy(), bundle.cand_scores.copy()
    if added:
        moved = np.array(sorted(added))
        sequences = [np.r_[bundle.history[bundle.indptr[row]:bundle.indptr[row + 1]], added[row]] for row in moved]
        opens = [np.r_[bundle.opens[bundle.indptr[row]:bundle.indptr[row + 1]], np.ones(len(added[row]), bool)]
                 for row in moved]  # each event the service took is its own step, as when serving a session
        indptr = np.r_[0, np.cumsum([len(s) for s in sequences])]
        history = histories_of(indptr, np.concatenate(sequences).astype(np.int32), np.concatenate(opens))
        n_items = len(bundle.item_ids) - 1
        items[moved], scores[moved] = top_n(bundle.generator().scorer(history, history, bundle.ease), history,
                                            n_items, items.shape[1], params.candidates.batch_size)
    return ServedLists(items, scores, batches, sum(map(len, added.values())), len(added))


@dataclass(frozen=True)
class Repricing:
    champion: Champion
    lists: ServedLists
    prices: ExposurePrices  # the candidate's, in the champion's item order
    verdict: Verdict
    served: str  # the version served after the run: the new one when promoted, else the champion


def reprice(params: Params) -> Repricing:
    """Re-solve the served version's prices, judge the result on test and publish it if the gate
    promotes it. Refuses (InputError) when nothing is served or its policy weighs no prices."""
    cfg, k, exposure = params.deploy, params.policy.k, params.exposure
    if store.current_version(cfg.store) is None:  # said before loading anything
        raise InputError(f"{cfg.store}: nothing is served, so there are no prices to refresh (run `recmoo deploy`)")
    features = load_features(params.features.dir)
    generator = load_generator(params.train.model_dir)
    today_terms = training_terms(features, params.policy.similarity, lambda: item_embeddings(generator.model),
                                 lambda: text_vectors_if_any(params.item_text.dir))
    _, test = yardsticks(features, load_candidates(params.candidates.path), today_terms, k, params.policy.latency,
                         params.search.threads)
    today = identity(params.train.model_dir, params.features.dir)
    with store.locked(cfg.store):  # as deploy: the champion must not change between the decision and the switch
        champion = load_champion(cfg.store)
        policy = clamp_pools(policy_vector(champion.bundle.variables), k, test.requests.n_candidates)[0]
        if policy[EXPOSURE_CAP] == 0 and policy[EXPOSURE_FLOOR] == 0:
            raise InputError(f"served version {champion.version}: its policy weighs no exposure prices "
                             "(exposure_cap = exposure_floor = 0), so repricing changes no list")
        lists = served_lists(champion.bundle, untrained_batch_files(params.data, champion.manifest), params)
        prices = solve_exposure(lists.scores, lists.items, len(champion.bundle.item_ids) - 1, k, exposure.cap_slack,
                                exposure.floor, exposure.iterations, params.seed)
        champion_yard = champion_yardstick(champion, test, features, today_terms, params.candidates.batch_size, today)
        # The champion's candidates on today's test baskets, weighing the new prices instead of its own.
        candidate_yard = with_prices(champion_yard, *champion_prices(replace(champion.bundle, prices=prices), features))
        why = f"reprice of {champion.version}: its model and policy, prices re-solved from the lists it serves"
        choice = Choice(policy, why, [], None)
        generator_and_data = {**{key: value for key, value in champion.manifest.get("identity", {}).items()
                                 if key != "policy"}, "prices_sha256": prices_digest(prices)}
        verdict = judge(choice, candidate_yard, champion, champion_yard, generator_and_data, cfg, k,
                        params.evaluation, params.seed)
        served = champion.version
        if verdict.decision.promoted:
            served = store.publish(cfg.store, lambda folder, name: build_repriced(folder, name, champion, prices,
                                                                                  lists, verdict, params))
        store.log_decision(cfg.store, {
            "event": "reprice", "at": datetime.now(UTC).isoformat(timespec="seconds"), "served": served,
            "promoted": verdict.decision.promoted, "reason": verdict.decision.reason, "from": champion.version,
            "batches": list(lists.batches), "events": lists.events, "users_moved": lists.users_moved,
            "test": labelled_figures(verdict.candidate, k)})
    return Repricing(champion, lists, prices, verdict, served)


def prices_digest(prices: ExposurePrices) -> str:
    return sha256(json.dumps(prices.to_json(), sort_keys=True).encode()).hexdigest()


def build_repriced(folder: Path, name: str, champion: Champion, prices: ExposurePrices, lists: ServedLists,
                   verdict: Verdict, params: Params) -> None:
    """The champion's files but its prices, and a manifest that says what changed and why."""
    source = champion.bundle.folder
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_file() and relative.as_posix() not in (EXPOSURE_FILE, MANIFEST_FILE):
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, folder / relative)
    (folder / EXPOSURE_FILE).write_text(json.dumps(prices.to_json(), sort_keys=True) + "\n")
    k = params.policy.k
    used = Artifact(SERVED_EVENTS, "reprice", tuple(Path(p).as_posix() for p in lists.batches.values()))
    settings = {**champion.manifest["params"], "exposure": params.exposure.model_dump(by_alias=True, mode="json")}
    manifest = {
        **champion.manifest, "version": name, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "identity": verdict.identity,
        "gate": {"promoted": verdict.decision.promoted, "reason": verdict.decision.reason},
        "test": {"accuracy_only": labelled_figures(verdict.accuracy_only, k),
                 "deployed": labelled_figures(verdict.candidate, k), "ratio": labelled_ratios(verdict.ratio, k)},
        "valid": {"ratio": None},
        "champion": {"version": champion.version, "test": labelled_figures(verdict.champion, k)},
        "exposure": {"settings": prices.settings, "solves": prices.solves},
        "repriced": {"from": champion.version, "batches": list(lists.batches), "events": lists.events,
                     "users_moved": lists.users_moved},
        "lineage": [*(link for link in champion.manifest["lineage"] if link["name"] != SERVED_EVENTS),
                    *([lineage_link(used)] if lists.batches else [])],
        "params": settings, "params_sha256": params_digest(settings),
        "deployed_files": hash_files([p.name for p in sorted(folder.iterdir())], folder),
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def main(params: Params) -> None:
    result = reprice(params)
    verb = f"promoted {result.served}" if result.verdict.decision.promoted else f"kept {result.served}"
    print(f"reprice: {verb} ({result.verdict.decision.reason}); priced from {result.lists.events} new events "
          f"of {result.lists.users_moved} users in {len(result.lists.batches)} batches")
