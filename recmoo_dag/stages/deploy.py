"""`recmoo deploy`: choose a policy of the front, judge it against the champion on test, publish it."""
from __future__ import annotations

from recmoo_dag import store
from recmoo_dag.candidates import load_candidates
from recmoo_dag.choice import choose_policy
from recmoo_dag.config import Params
from recmoo_dag.deploy import (
    build_version,
    champion_yardstick,
    decision_log,
    identity,
    judge,
    load_champion,
    record,
    refuse_inputs_unlike_dvc_lock,
    report,
)
from recmoo_dag.exposure import load_window_prices
from recmoo_dag.features import load_features
from recmoo_dag.front import read_front
from recmoo_dag.generator import load_generator
from recmoo_dag.io import write_json
from recmoo_dag.item_terms import training_terms
from recmoo_dag.item_text import text_vectors_if_any
from recmoo_dag.model import check_catalog, item_embeddings
from recmoo_dag.yardstick import yardsticks


def main(params: Params) -> None:
    cfg, k = params.deploy, params.policy.k
    refuse_inputs_unlike_dvc_lock(params)
    features = load_features(params.features.dir)
    generator = load_generator(params.train.model_dir)
    check_catalog(generator.model, features.n_items, params.train.model_dir, params.features.dir)
    prices = load_window_prices(params.exposure.prices)  # the version carries test's: what the gate judged
    terms = training_terms(features, params.policy.similarity, lambda: item_embeddings(generator.model),
                           lambda: text_vectors_if_any(params.item_text.dir))
    valid, test = yardsticks(features, load_candidates(params.candidates.path), terms, k, params.policy.latency,
                             params.search.threads, prices)
    fronts = (read_front(params.search.front_of(split)) for split in range(cfg.searched_splits))  # read when reached
    choice = choose_policy(fronts, test if cfg.select_on == "test" else valid, cfg, k, params.evaluation, params.seed)
    generator_and_data = identity(params.train.model_dir, params.features.dir)
    with store.locked(cfg.store):  # the champion must not change between the decision and the switch
        champion = load_champion(cfg.store)
        champion_yard = champion_yardstick(champion, test, features, test.terms, params.candidates.batch_size,
                                           generator_and_data) if champion else None
        verdict = judge(choice, test, champion, champion_yard, generator_and_data, cfg, k, params.evaluation,
                        params.seed)
        served = champion.version if champion else None
        if verdict.decision.promoted:
            decision = record(choice, verdict, champion, cfg, k)
            served = store.publish(cfg.store, lambda folder, name: build_version(
                folder, name, params, features, generator, terms.vectors, prices["test"], verdict.policy,
                test.requests.n_candidates, decision))
        store.log_decision(cfg.store, decision_log(served, choice, verdict, champion, cfg, k))
    write_json(cfg.metrics, report(served, choice, verdict, champion, k).to_json())
    verb = f"promoted {served}" if verdict.decision.promoted else f"kept {served or 'nothing'}"
    print(f"deploy: {verb} ({verdict.decision.reason}); rule {cfg.rule}: {choice.reason}")
