import numpy as np

from recmoo_dag.cli import main
from recmoo_dag.data import read_logs
from recmoo_dag.synth import synthesize
from tests.conftest import section


def test_same_seed_same_log_and_a_different_seed_differs():
    a, _ = synthesize(50, 40, 2000, 5, seed=1)
    b, _ = synthesize(50, 40, 2000, 5, seed=1)
    c, _ = synthesize(50, 40, 2000, 5, seed=2)
    assert a.equals(b) and not a.equals(c)


def test_log_is_realistic():
    interactions, items = synthesize(400, 300, 40_000, 8, seed=0)
    per_item = interactions["item_id"].value_counts().to_numpy()
    assert per_item[: len(per_item) // 10].sum() > 0.4 * per_item.sum()  # power-law head
    per_user = interactions.groupby("user_id").size()
    assert per_user.min() >= 5 and per_user.max() > 5 * per_user.median()  # heavy-tailed activity
    assert interactions["rating"].between(1, 5).all()
    ordered = interactions.sort_values(["user_id", "timestamp"], kind="stable")
    category = dict(zip(items["item_id"], items["categories"].str[0]))
    cats = ordered["item_id"].map(category).to_numpy()
    same_user = ordered["user_id"].to_numpy()[1:] == ordered["user_id"].to_numpy()[:-1]
    # sessions stay in one category: consecutive events agree far more often than 1 in 8
    assert (cats[1:] == cats[:-1])[same_user].mean() > 0.6


def test_cli_writes_formats_that_ingest_reads(tmp_path):
    for fmt in ("recbole", "movielens-csv"):
        out = tmp_path / fmt
        assert main(["synth", "--users", "30", "--items", "20", "--events", "600", "--format", fmt,
                     "--out", str(out)]) == 0
        log = read_logs(out, fmt, section("data.generic"))
        assert log.interactions["user_id"].nunique() == 30
        assert len(log.items) == 20
        assert np.issubdtype(log.interactions["timestamp"].dtype, np.integer)
