"""`recmoo search`: NSGA-II/III over re-ranking policies against the MMR sweep, random and grid search
at the same budget; writes the front (front.csv), its picture (front.png) and the hypervolumes."""
from __future__ import annotations

from pathlib import Path

from recmoo_dag.candidates import load_candidates
from recmoo_dag.config import Params
from recmoo_dag.exposure import load_window_prices
from recmoo_dag.features import Features, load_features
from recmoo_dag.front import front_csv, front_table
from recmoo_dag.front_plot import plot_fronts
from recmoo_dag.io import atomic_write, write_json
from recmoo_dag.item_terms import training_terms
from recmoo_dag.item_text import text_vectors_if_any
from recmoo_dag.model import item_embeddings, load_model
from recmoo_dag.objectives import CATALOGUE
from recmoo_dag.policy import accuracy_only_policy
from recmoo_dag.search import SearchResult, search
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
                         switched_off: tuple[str, ...] = ()) -> SearchResult:
    """The study with the stage's settings (params.search), its front found on `valid`'s users;
    `switched_off` variables held at 0 (benchmarks' ablations)."""
    cfg = params.search
    termination = ("n_eval", cfg.n_evals) if cfg.n_evals is not None else ("n_gen", cfg.n_gen)
    cases = sample_cases(valid.cases, features.history_before("valid").lengths, cfg.baskets, params.seed)
    return search(valid, test, cfg.objectives, cfg.algorithm, cfg.pop_size, termination, cfg.reference_point,
                  cfg.mmr_pool, params.seed, params.evaluation, cfg.front_epsilon, cases,
                  stall=(cfg.stall_generations, cfg.stall_tolerance) if cfg.stall_generations else None,
                  rescore_policies=cfg.rescore_policies, ndcg_floor=cfg.ndcg_floor, switched_off=switched_off)


def main(params: Params) -> None:
    cfg, policy = params.search, params.policy
    features = load_features(params.features.dir)
    valid, test = yardsticks_of(params, features)
    if params.deploy.select_on == "valid":  # the rule's confirmation users judge its pick unseen by the search too
        valid, _ = valid.split_for_confirmation(params.deploy.confirm_share, params.seed)
    result = search_as_configured(params, valid, test, features)
    nsga = result.fronts["nsga"]
    catalogue = {"valid": valid.catalogue(nsga.x), "test": test.catalogue(nsga.x)}
    table = front_table(nsga.x, {"valid": nsga.valid, "test": nsga.test}, nsga.ndcg_ratio, catalogue)
    atomic_write(cfg.front, lambda tmp: tmp.write_text(front_csv(table)))
    gini = CATALOGUE.index("exposure_gini")
    accuracy_only_gini = valid.catalogue(accuracy_only_policy(policy.k))[0, gini]
    atomic_write(Path(cfg.report_dir) / "front.png", lambda tmp: plot_fronts(result, tmp, policy.k,
                                                                            catalogue["valid"][:, gini], accuracy_only_gini))
    metrics = result.metrics(len(table))
    write_json(cfg.metrics, metrics.to_json())
    hv = metrics.hypervolume
    print(f"search: {metrics.n_evals} evaluations on {metrics.baskets_searched} baskets of {metrics.users_searched} "
          f"users in {metrics.seconds:.1f}s, {metrics.front_size} policies on the front; hypervolume "
          f"nsga {hv['nsga']:.4f}, mmr {hv['mmr_sweep']:.4f}, random {hv['random']:.4f}, grid {hv['grid']:.4f}")
