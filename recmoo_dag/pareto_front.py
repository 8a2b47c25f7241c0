"""The pareto_front stage: read candidates, model and features, run the search, write the front.

Outputs (byte-identical across reruns on the same inputs; timings only in metrics/search.json):
  {search.report_dir}/front.csv  one row per non-dominated NSGA policy: its decision variables
                                 (policy.NAMES), then valid_<objective> and test_<objective>
  {search.report_dir}/front.png  NDCG@k against each other objective: NSGA front, baseline fronts,
                                 the accuracy-only policy
  {search.metrics}               budget, speed, front size, hypervolumes on valid and on test
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recmoo_dag.config import Params
from recmoo_dag.features import Features, load_features
from recmoo_dag.io import atomic_write, write_json
from recmoo_dag.metrics import item_similarity, self_information
from recmoo_dag.policy import NAMES, VARIABLES, build_context
from recmoo_dag.search import OBJECTIVES, Yardstick, search

CANDIDATE_KEYS = tuple(f"{c}_{part}" for c in ("valid", "test") for part in ("items", "scores", "targets"))
EMBEDDING_KEY = "item_embedding.weight"
LABELS = {"ndcg": "NDCG@10", "ild": "ILD@10", "novelty": "novelty (bits)", "coverage": "coverage@10",
          "personalization": "personalization", "cost": "serving cost (ms)"}
STYLE = {"grid": ("#2ca02c", "s", 10), "random": ("#7f7f7f", ".", 8),
         "mmr_sweep": ("#ff7f0e", "^", 12), "nsga": ("#1f77b4", "o", 14)}


def load_candidates(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of candidates.npz, without pickle; names what is missing."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    missing = sorted(set(CANDIDATE_KEYS) - set(arrays))
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}: rebuild it with `recmoo candidates`")
    return arrays


def item_vectors(features: Features, similarity: str, model_dir: str | Path) -> np.ndarray:
    """Genre multi-hots when asked for or available ('auto'), else the model's item embeddings."""
    has_categories = features.categories is not None and features.categories.any()
    if similarity == "categories" or (similarity == "auto" and has_categories):
        if not has_categories:
            raise ValueError("policy.similarity is 'categories' but the items have none: use 'auto' or 'embeddings'")
        return features.categories.astype(np.float32)
    from safetensors.numpy import load_file

    path = Path(model_dir) / "model.safetensors"
    weights = load_file(path)
    if EMBEDDING_KEY not in weights:
        raise ValueError(f"{path}: no tensor '{EMBEDDING_KEY}' for embedding similarity")
    return weights[EMBEDDING_KEY].astype(np.float32)


def yardsticks(params: Params) -> tuple[Yardstick, Yardstick]:
    """The valid and test contexts of the re-ranker, with what their objectives are measured against."""
    features = load_features(params.features.dir)
    candidates = load_candidates(params.candidates.path)
    vectors = item_vectors(features, params.policy.similarity, params.train.model_dir)
    if len(vectors) != features.n_items + 1:
        raise ValueError(f"item vectors cover {len(vectors) - 1} items but {params.features.dir} has "
                         f"{features.n_items}: re-run `dvc repro` so the model follows the features")
    sim = item_similarity(vectors)
    info = self_information(features.train_counts, features.n_users)
    latency = (params.policy.latency_intercept_ms, params.policy.latency_per_candidate_ms)

    def yard(name: str) -> Yardstick:
        ctx = build_context(candidates[f"{name}_items"], candidates[f"{name}_scores"], vectors, sim,
                            features.train_counts, features.history(name), features.user_ids, features.item_ids,
                            features.n_users)
        return Yardstick(ctx, candidates[f"{name}_targets"], sim, info, features.n_items,
                         params.policy.k, latency, params.search.threads)

    return yard("valid"), yard("test")


def run(params: Params) -> dict:
    """`recmoo pareto_front`. Returns the payload of search.metrics."""
    cfg = params.search
    valid, test = yardsticks(params)
    termination = ("n_eval", cfg.n_evals) if cfg.n_evals is not None else ("n_gen", cfg.n_gen)
    result = search(valid, test, cfg.objectives, cfg.algorithm, cfg.pop_size, termination,
                    cfg.reference_point, cfg.mmr_pool, params.seed, cfg.front_epsilon)
    report = Path(cfg.report_dir)
    table = front_table(result["fronts"]["nsga"])
    # Shortest round-trip floats: deploy re-reads the variables and must score exactly these policies.
    atomic_write(report / "front.csv", lambda tmp: tmp.write_text(table.to_csv(index=False)))
    atomic_write(report / "front.png", lambda tmp: plot_fronts(result, tmp))
    payload = {
        "n_evals": int(result["n_evals"]),
        "seconds": round(result["seconds"], 3),
        "evals_per_second": round(result["n_evals"] / result["seconds"], 1),
        "front_size": len(table),
        "front_size_before_thinning": int(result["front_size_before_thinning"]["nsga"]),
        "hypervolume": {m: round(v, 6) for m, v in result["hypervolume"].items()},
        "hypervolume_test": {m: round(v, 6) for m, v in result["hypervolume_test"].items()},
        "best_coverage_within_2pct_ndcg": best_within(table, result["accuracy_only"]["valid"], 0.98),
        "accuracy_only": {context: {name: round(float(v), 6) for name, v in zip(OBJECTIVES, values)}
                          for context, values in result["accuracy_only"].items()},
    }
    write_json(cfg.metrics, payload)
    hv = payload["hypervolume"]
    print(f"pareto_front: {payload['n_evals']} evaluations in {payload['seconds']:.1f}s, "
          f"{payload['front_size']} policies on the front; hypervolume nsga {hv['nsga']:.4f}, "
          f"mmr {hv['mmr_sweep']:.4f}, random {hv['random']:.4f}, grid {hv['grid']:.4f}")
    return payload


def front_table(front: dict) -> pd.DataFrame:
    """One row per policy: variables, valid_* and test_* objectives; sorted for stable bytes."""
    columns = {v.name: front["x"][:, j].round().astype(int) if v.integer else front["x"][:, j]
               for j, v in enumerate(VARIABLES)}
    for context in ("valid", "test"):
        columns.update({f"{context}_{name}": front[context][:, j] for j, name in enumerate(OBJECTIVES)})
    table = pd.DataFrame(columns)
    return table.sort_values(["valid_ndcg", *NAMES], ascending=[False] + [True] * len(NAMES),
                             kind="mergesort").reset_index(drop=True)


def best_within(table: pd.DataFrame, accuracy_only: np.ndarray, ratio: float) -> dict:
    """The front policy with the most valid coverage among those keeping ratio x accuracy-only NDCG."""
    ok = table[table["valid_ndcg"] >= ratio * accuracy_only[0]]
    if ok.empty:
        return {"found": False}
    row = ok.sort_values(["valid_coverage", "valid_ndcg"], ascending=False, kind="mergesort").iloc[0]
    return {"found": True, "policy": {name: float(row[name]) for name in NAMES},
            "valid_ndcg_ratio": round(float(row["valid_ndcg"] / accuracy_only[0]), 4),
            "valid_coverage_gain": round(float(row["valid_coverage"] / accuracy_only[3] - 1), 4),
            "test_ndcg": round(float(row["test_ndcg"]), 6), "test_coverage": round(float(row["test_coverage"]), 6)}


def frontier_2d(x: np.ndarray, y: np.ndarray, maximize_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D Pareto frontier (max x, max or min y) of a point cloud, as a staircase from high x."""
    sign = 1.0 if maximize_y else -1.0
    order = np.lexsort((-sign * y, -x))  # x descending, then best y first
    best, keep = -np.inf, []
    for i in order:  # a loop over one method's few hundred front points, plotting only
        if sign * y[i] > best:
            best = sign * y[i]
            keep.append(i)
    return x[keep], y[keep]


def plot_fronts(result: dict, path: Path) -> None:
    """NDCG@k (x) against each other objective (y) on valid: every method's non-dominated policies
    (faint) and their 2-D frontier in that plane (line). One PNG, stable bytes."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; same bytes everywhere
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5), constrained_layout=True)
    reference = result["accuracy_only"]["valid"]
    for ax, name in zip(axes.ravel(), OBJECTIVES[1:]):
        j = OBJECTIVES.index(name)
        for method, (color, marker, size) in STYLE.items():
            points = result["fronts"][method]["valid"]
            ax.scatter(points[:, 0], points[:, j], s=size, c=color, marker=marker, alpha=0.25, linewidths=0)
            fx, fy = frontier_2d(points[:, 0], points[:, j], maximize_y=name != "cost")
            ax.step(fx, fy, where="post", color=color, lw=2.4 if method == "nsga" else 1.4,
                    label=f"{method} ({len(points)} policies)")
        ax.scatter([reference[0]], [reference[j]], s=160, c="#d62728", marker="*", label="accuracy-only", zorder=5)
        ax.set_xlabel(LABELS["ndcg"] + " (valid)")
        ax.set_ylabel(LABELS[name])
        ax.grid(alpha=0.3)
    axes.ravel()[-1].axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    axes.ravel()[-1].legend(handles, labels, loc="center", title="non-dominated set of each method\n"
                            "(dots: all 6 objectives; line: best in this plane)")
    fig.suptitle("Re-ranking policies on the validation users: trade-offs against accuracy")
    fig.savefig(path, format="png", dpi=90, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)
