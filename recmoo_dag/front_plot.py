"""front.png: NDCG against each other objective for the NSGA front and the baselines' fronts, and
against the exposure Gini (objectives.CATALOGUE: reported, not searched) for NSGA's front."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from recmoo_dag.objectives import OBJECTIVES, label
from recmoo_dag.search import SearchResult

UNITS = {"novelty": " (bits)", "cost": " (ms)"}
STYLE = {"grid": ("#2ca02c", "s", 10), "random": ("#7f7f7f", ".", 8),
         "mmr_sweep": ("#ff7f0e", "^", 12), "nsga": ("#1f77b4", "o", 14)}


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


def plot_fronts(result: SearchResult, path: Path, k: int, gini: np.ndarray, accuracy_only_gini: float) -> None:
    """NDCG (x) against each other objective (y) on valid: every method's non-dominated policies
    (faint) and their 2-D frontier in that plane (line); and against the exposure Gini of NSGA's
    front, gini (P,) on valid. One PNG, stable bytes."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; same bytes everywhere
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5), constrained_layout=True)
    accuracy_only = result.accuracy_only["valid"]
    for ax, name in zip(axes.ravel(), OBJECTIVES[1:]):
        j = OBJECTIVES.index(name)
        for method, (color, marker, size) in STYLE.items():
            points = result.fronts[method].valid
            ax.scatter(points[:, 0], points[:, j], s=size, c=color, marker=marker, alpha=0.25, linewidths=0)
            fx, fy = frontier_2d(points[:, 0], points[:, j], maximize_y=name != "cost")
            ax.step(fx, fy, where="post", color=color, lw=2.4 if method == "nsga" else 1.4,
                    label=f"{method} ({len(points)} policies)")
        ax.scatter([accuracy_only[0]], [accuracy_only[j]], s=160, c="#d62728", marker="*", label="accuracy-only", zorder=5)
        ax.set_xlabel(label("ndcg", k) + " (valid)")
        ax.set_ylabel(label(name, k) + UNITS.get(name, ""))
        ax.grid(alpha=0.3)
    ax = axes.ravel()[len(OBJECTIVES) - 1]
    points = result.fronts["nsga"].valid
    color, marker, size = STYLE["nsga"]
    ax.scatter(points[:, 0], gini, s=size, c=color, marker=marker, alpha=0.25, linewidths=0)
    fx, fy = frontier_2d(points[:, 0], gini, maximize_y=False)
    ax.step(fx, fy, where="post", color=color, lw=2.4)
    ax.scatter([accuracy_only[0]], [accuracy_only_gini], s=160, c="#d62728", marker="*", zorder=5)
    ax.set_xlabel(label("ndcg", k) + " (valid)")
    ax.set_ylabel(label("exposure_gini", k) + " (lower: exposure spread wider)")
    ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(OBJECTIVES):]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    axes.ravel()[-1].legend(handles, labels, loc="center", title="non-dominated set of each method\n"
                            "(dots: all 6 objectives; line: best in this plane)")
    fig.suptitle("Re-ranking policies on the validation users: trade-offs against accuracy")
    fig.savefig(path, format="png", dpi=90, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)
