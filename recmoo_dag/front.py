"""front.csv, the Pareto front the search stage writes and the deploy stage chooses from.

One row per policy: its decision variables (policy.VARIABLE_NAMES; the pool an integer), then
valid_<objective> and test_<objective> for every objective (objectives.OBJECTIVES, natural values),
then per window the NDCG@k ratio to the accuracy-only policy and its interval (<window>_ndcg_ratio,
_low, _high: a paired bootstrap over users), and the catalogue's figures beside coverage
(<window>_exposure_gini, <window>_tail_share: objectives.CATALOGUE, reported, not searched).
Rows are sorted by valid NDCG, then by the variables, so the same front gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from recmoo_dag.decision import choose
from recmoo_dag.errors import InputError
from recmoo_dag.objectives import CATALOGUE, JUDGED, OBJECTIVES
from recmoo_dag.policy import VARIABLE_NAMES, VARIABLES


def front_table(x: np.ndarray, natural: dict[str, np.ndarray], ndcg_ratio: dict[str, np.ndarray],
                catalogue: dict[str, np.ndarray]) -> pd.DataFrame:
    """x (P, d) policies; natural {"valid": (P, m), "test": (P, m)} their objectives; ndcg_ratio
    {"valid": (P, 3), "test": (P, 3)} their NDCG@k over accuracy-only's with its interval; catalogue
    {"valid": (P, 2), "test": (P, 2)} their objectives.CATALOGUE figures -> the table."""
    columns = {v.name: x[:, j].round().astype(int) if v.integer else x[:, j] for j, v in enumerate(VARIABLES)}
    for window in ("valid", "test"):
        columns.update({f"{window}_{name}": natural[window][:, j] for j, name in enumerate(OBJECTIVES)})
        columns.update({f"{window}_ndcg_ratio{part}": ndcg_ratio[window][:, j]
                        for j, part in enumerate(("", "_low", "_high"))})
        columns.update({f"{window}_{name}": catalogue[window][:, j] for j, name in enumerate(CATALOGUE)})
    table = pd.DataFrame(columns)
    return table.sort_values(["valid_ndcg", *VARIABLE_NAMES], ascending=[False] + [True] * len(VARIABLE_NAMES),
                             kind="mergesort").reset_index(drop=True)


def front_csv(table: pd.DataFrame) -> str:
    # Shortest round-trip floats: deploy re-reads the variables and must score exactly these policies.
    return table.to_csv(index=False)


def read_front(path: str | Path) -> np.ndarray:
    """The decision variables of the front's policies, in policy.VARIABLE_NAMES order: (P, d)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no front here (run `recmoo search`)")
    front = pd.read_csv(path)
    missing = [name for name in VARIABLE_NAMES if name not in front.columns]
    if missing:
        raise InputError(f"{path}: columns {missing} missing; expected the decision variables {list(VARIABLE_NAMES)}")
    if front.empty:
        raise InputError(f"{path}: the front is empty: re-run `recmoo search`")
    return front[list(VARIABLE_NAMES)].to_numpy(dtype=np.float64)


def best_within(table: pd.DataFrame, accuracy_only: np.ndarray, ratio: float, k: int) -> dict:
    """The front policy with the most valid coverage among those keeping ratio x accuracy-only NDCG
    on point estimates: the decision rule `constrained` with that one bound (decision.choose)."""
    relative = table[[f"valid_{name}" for name in JUDGED]].to_numpy() / accuracy_only[:len(JUDGED)]
    point = {name: relative[:, j] for j, name in enumerate(JUDGED)}
    order, _ = choose("constrained", relative, point, {"ndcg": ratio}, "coverage", {}, k, confidence=0.5)
    if len(order) == 0:
        return {"found": False}
    row = table.iloc[order[0]]
    ndcg, coverage = OBJECTIVES.index("ndcg"), OBJECTIVES.index("coverage")
    return {"found": True, "policy": {name: float(row[name]) for name in VARIABLE_NAMES},
            "valid_ndcg_ratio": round(float(row["valid_ndcg"] / accuracy_only[ndcg]), 4),
            "valid_coverage_gain": round(float(row["valid_coverage"] / accuracy_only[coverage] - 1), 4),
            "test_ndcg": round(float(row["test_ndcg"]), 6), "test_coverage": round(float(row["test_coverage"]), 6)}
