"""`recmoo search`: NSGA-II/III over re-ranking policies against the MMR sweep, random and grid search
at the same budget; writes the front (front.csv), its picture (front.png) and the hypervolumes, and
the fronts the deploy rule's retries need (front_split1.csv, ...: deploy.splits)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recmoo_dag.candidates import load_candidates
from recmoo_dag.choice import choose_between, clamp_pools
from recmoo_dag.config import Params
from recmoo_dag.exposure import load_window_prices
from recmoo_dag.features import Features, load_features
from recmoo_dag.front import front_csv, front_table, read_front
from recmoo_dag.front_plot import plot_fronts
from recmoo_dag.io import atomic_write, write_json
from recmoo_dag.item_terms import training_terms
from recmoo_dag.item_text import text_vectors_if_any
from recmoo_dag.model import item_embeddings, load_model
from recmoo_dag.objectives import CATALOGUE
from recmoo_dag.policy import accuracy_only_policy
from recmoo_dag.search import MethodFront, SearchResult, search
from recmoo_dag.yardstick import Yardstick, sample_cases, yardsticks


def yardsticks_of(params: Params, features: Features | None = None) -> tuple[Yardstick, Yardstick]:
    """The valid and test yardsticks of the stage's inputs, each window weighing its own exposure
    prices (also what the benchmarks measure on)."""
    features = features or load_features(params.features.dir)
    terms = training_terms(features, params.policy.similarity,
                           lambda: item_embeddings(load_model(params.train.model_dir)),
                           lambda: text_vectors_if_any(params.item_text.dir))
    return yardsticks(features, load_candidates(params.candidates.path), terms, params.policy.k,
                      params.policy.latency, params.search.threads, load_window_prices(params.exposure.prices))


def search_as_configured(params: Params, valid: Yardstick, test: Yardstick, features: Features,
                         switched_off: tuple[str, ...] = (), baselines: bool = True) -> SearchResult:
    """The study with the stage's settings (params.search), its front found on `valid`'s users;
    `switched_off` variables held at 0 (benchmarks' ablations); `baselines` False: NSGA alone."""
    cfg = params.search
    termination = ("n_eval", cfg.n_evals) if cfg.n_evals is not None else ("n_gen", cfg.n_gen)
    cases = sample_cases(valid.cases, features.history_before("valid").lengths, cfg.baskets, params.seed)
    return search(valid, test, cfg.objectives, cfg.algorithm, cfg.pop_size, termination, cfg.reference_point,
                  cfg.mmr_pool, params.seed, params.evaluation, cfg.front_epsilon, cases,
                  stall=(cfg.stall_generations, cfg.stall_tolerance) if cfg.stall_generations else None,
                  rescore_policies=cfg.rescore_policies, ndcg_floor=cfg.ndcg_floor, switched_off=switched_off,
                  baselines=baselines)


def selection_users(params: Params, valid: Yardstick, split: int = 0) -> Yardstick:
    """The valid users the search finds the `split`-th front on: the deploy rule's confirmation
    users judge its pick unseen by the search too."""
    if params.deploy.select_on != "valid":
        return valid
    return valid.split_for_confirmation(params.deploy.confirm_share, params.seed, split)[0]


def write_front(path: str | Path, front: MethodFront, valid: Yardstick, test: Yardstick) -> np.ndarray:
    """front.csv of a front found on `valid`'s users; returns its policies' catalogue figures there."""
    catalogue = {"valid": valid.catalogue(front.x), "test": test.catalogue(front.x)}
    table = front_table(front.x, {"valid": front.valid, "test": front.test}, front.ndcg_ratio, catalogue)
    atomic_write(path, lambda tmp: tmp.write_text(front_csv(table)))
    return catalogue["valid"]


def remove_retry_fronts(params: Params) -> None:
    """An earlier run's retry fronts go first: which of them this run needs depends on the rule."""
    for front in Path(params.search.report_dir).glob("front_split*.csv"):
        front.unlink()


def pick_confirms(params: Params, valid: Yardstick, split: int) -> bool:
    """Whether the deploy rule's pick on the `split`-th front (as written) confirms on that split's
    confirmation users: exactly the test the deploy stage runs on it."""
    selection, confirmation = valid.split_for_confirmation(params.deploy.confirm_share, params.seed, split)
    front = clamp_pools(read_front(params.search.front_of(split)), params.policy.k, valid.requests.n_candidates)
    return choose_between(front, selection, confirmation, params.deploy, params.policy.k, params.evaluation,
                          params.seed).policy is not None


def search_retry_splits(params: Params, valid: Yardstick, test: Yardstick, features: Features) -> None:
    """The fronts of the deploy rule's retries (deploy.splits): while the rule's pick on the last
    front does not confirm, NSGA alone on the next split's selection users. A log whose first pick
    confirms pays for no retry."""
    remove_retry_fronts(params)
    splits = params.deploy.searched_splits
    for split in range(1, splits):
        if pick_confirms(params, valid, split - 1):
            return
        selection = selection_users(params, valid, split)
        result = search_as_configured(params, selection, test, features, baselines=False)
        write_front(params.search.front_of(split), result.fronts["nsga"], selection, test)
        print(f"search: no pick confirmed on split {split}; split {split + 1} of up to {splits}, "
              f"{len(result.fronts['nsga'].x)} policies on its front ({result.seconds:.1f}s NSGA)")


def main(params: Params) -> None:
    cfg, policy = params.search, params.policy
    features = load_features(params.features.dir)
    valid, test = yardsticks_of(params, features)
    selection = selection_users(params, valid)
    result = search_as_configured(params, selection, test, features)
    catalogue = write_front(cfg.front, result.fronts["nsga"], selection, test)
    gini = CATALOGUE.index("exposure_gini")
    accuracy_only_gini = selection.catalogue(accuracy_only_policy(policy.k))[0, gini]
    atomic_write(Path(cfg.report_dir) / "front.png", lambda tmp: plot_fronts(result, tmp, policy.k,
                                                                            catalogue[:, gini], accuracy_only_gini))
    metrics = result.metrics(len(result.fronts["nsga"].x))
    write_json(cfg.metrics, metrics.to_json())
    hv = metrics.hypervolume
    print(f"search: {metrics.n_evals} evaluations on {metrics.baskets_searched} baskets of {metrics.users_searched} "
          f"users in {metrics.seconds:.1f}s, {metrics.front_size} policies on the front; hypervolume "
          f"nsga {hv['nsga']:.4f}, mmr {hv['mmr_sweep']:.4f}, random {hv['random']:.4f}, grid {hv['grid']:.4f}")
    search_retry_splits(params, valid, test, features)
