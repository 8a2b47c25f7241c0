"""benchmarks/bench_datasets.py --relabel: ids renamed by a seeded bijection, every other byte of a value kept."""
import pandas as pd

from benchmarks.bench_datasets import relabelled

COLUMNS = {"ratings.csv": {"userId": "user", "movieId": "item"}, "movies.csv": {"movieId": "item"}}


def small_log(folder):
    folder.mkdir()
    pd.DataFrame({"userId": [1, 1, 2, 3, 3, 3], "movieId": [10, 20, 10, 30, 20, 10],
                  "rating": ["4.0", "3.5", "5.0", "1.0", "2.0", "4.5"],
                  "timestamp": [100, 100, 200, 300, 301, 302]}).to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame({"movieId": [10, 20, 30, 40], "title": ["Heat (1995)", "Seven, the (1995)", "Up (2009)", "Ran (1985)"],
                  "genres": ["Crime", "Thriller", "Animation|Comedy", "Drama"]}).to_csv(folder / "movies.csv", index=False)
    (folder / "README.txt").write_text("not a table\n")


def read(folder, name):
    return pd.read_csv(folder / name, dtype=str, keep_default_na=False)


def test_relabel_renames_each_kind_consistently_and_keeps_everything_else(tmp_path):
    small_log(tmp_path / "log")
    relabelled(tmp_path / "log", tmp_path / "a", COLUMNS, seed=1)
    relabelled(tmp_path / "log", tmp_path / "b", COLUMNS, seed=1)
    relabelled(tmp_path / "log", tmp_path / "c", COLUMNS, seed=2)
    before, after = read(tmp_path / "log", "ratings.csv"), read(tmp_path / "a", "ratings.csv")
    movies_before, movies_after = read(tmp_path / "log", "movies.csv"), read(tmp_path / "a", "movies.csv")
    assert after[["rating", "timestamp"]].equals(before[["rating", "timestamp"]])
    assert movies_after[["title", "genres"]].equals(movies_before[["title", "genres"]])  # the quoted comma survives
    users = dict(zip(before["userId"], after["userId"]))
    items = dict(zip(list(before["movieId"]) + list(movies_before["movieId"]),
                     list(after["movieId"]) + list(movies_after["movieId"])))
    assert (after["userId"] == before["userId"].map(users)).all()  # a function of the old id: one name per user
    assert (movies_after["movieId"] == movies_before["movieId"].map(items)).all()  # the same name in every file
    assert sorted(users.values()) == sorted(users) and sorted(items.values()) == sorted(items)  # onto the same ids
    assert any(old != new for old, new in items.items())
    assert (tmp_path / "a" / "README.txt").read_text() == "not a table\n"
    for name in ("ratings.csv", "movies.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert read(tmp_path / "c", "movies.csv")["movieId"].tolist() != movies_after["movieId"].tolist()
