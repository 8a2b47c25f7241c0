"""front.csv: the table the search writes is the one deploy reads back, in a stable order."""
import numpy as np
import pandas as pd
import pytest

from recmoo_dag.errors import InputError
from recmoo_dag.front import best_within, front_csv, front_table, read_front
from recmoo_dag.objectives import OBJECTIVES
from recmoo_dag.policy import POOL, VARIABLE_NAMES, accuracy_only_policy


def three_policies():
    x = np.tile(accuracy_only_policy(5), (3, 1))
    x[:, POOL] = [5.0, 20.0, 12.0]
    x[1, 1] = 0.3
    natural = {"valid": np.array([[0.10, 0.5, 3.0, 0.20, 0.5, 0.3], [0.09, 0.6, 3.2, 0.45, 0.6, 0.4],
                                  [0.10, 0.5, 3.1, 0.30, 0.5, 0.35]]),
               "test": np.full((3, 6), 0.5)}
    ratio = {"valid": np.array([[1.0, 1.0, 1.0], [0.9, 0.85, 0.95], [1.0, 0.99, 1.01]]), "test": np.ones((3, 3))}
    catalogue = {"valid": np.array([[0.8, 0.3], [0.6, 0.5], [0.7, 0.4]]), "test": np.full((3, 2), 0.5)}
    return x, natural, ratio, catalogue


def test_table_round_trips_the_variables_and_sorts_by_valid_ndcg(tmp_path):
    x, natural, ratio, catalogue = three_policies()
    table = front_table(x, natural, ratio, catalogue)
    windows = [[f"{c}_{o}" for o in OBJECTIVES] + [f"{c}_ndcg_ratio{p}" for p in ("", "_low", "_high")]
               + [f"{c}_exposure_gini", f"{c}_tail_share"] for c in ("valid", "test")]
    assert list(table.columns) == [*VARIABLE_NAMES, *windows[0], *windows[1]]
    assert table["valid_ndcg"].tolist() == [0.10, 0.10, 0.09]
    assert table["valid_ndcg_ratio_low"].tolist() == [1.0, 0.99, 0.85]  # each row keeps its own interval
    assert table["valid_exposure_gini"].tolist() == [0.8, 0.7, 0.6]  # ... and its catalogue figures
    assert table["pool"].tolist() == [5, 12, 20] and table["pool"].dtype.kind == "i"  # ties: by the variables
    (tmp_path / "front.csv").write_text(front_csv(table))
    np.testing.assert_array_equal(read_front(tmp_path / "front.csv"), table[list(VARIABLE_NAMES)].to_numpy(float))


def test_best_within_is_the_most_coverage_above_the_ndcg_ratio():
    x, natural, ratio, catalogue = three_policies()
    table = front_table(x, natural, ratio, catalogue)
    best = best_within(table, natural["valid"][0], 0.98, 10)
    assert best["found"] and best["policy"]["pool"] == 12.0 and best["valid_coverage_gain"] == 0.5
    assert best_within(table, natural["valid"][0], 1.5, 10) == {"found": False}


def test_a_bad_front_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no front here"):
        read_front(tmp_path / "front.csv")
    (tmp_path / "front.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match=r"front.csv: columns \['log10_temperature'"):
        read_front(tmp_path / "front.csv")
    pd.DataFrame(columns=list(VARIABLE_NAMES)).to_csv(tmp_path / "front.csv", index=False)
    with pytest.raises(InputError, match="the front is empty"):
        read_front(tmp_path / "front.csv")
