"""The bad-input catalog: each raw file either gets a clear error (non-zero exit, the file and the
problem named, downstream outputs untouched) or, where stated, is accepted."""
from pathlib import Path

import pytest

from recmoo_dag.cli import main

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def good_rows(n_users=12, per_user=10, start=1_000_000_000):
    return "".join(f"u{u}\ti{(u * 7 + k) % 15}\t{1 + (u + k) % 5}\t{start + 60 * (u * per_user + k)}\n"
                   for u in range(n_users) for k in range(per_user))


@pytest.fixture
def raw(project):
    params = project()
    # A previous good run left validated data behind: a failing run must not overwrite it.
    Path(params.data.raw_dir, "good.inter").write_text(HEADER + good_rows())
    assert main(["ingest"]) == 0 and main(["validate"]) == 0
    Path(params.data.raw_dir, "good.inter").unlink()
    validated = Path(params.validation.interactions)
    before = validated.read_bytes()

    def run(content: bytes | str, name: str = "batch.inter", overrides=None) -> int:
        if overrides:
            project(overrides)
        path = Path(params.data.raw_dir, name)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        status = main(["ingest"])
        if status == 0:
            status = main(["validate"])
        if status != 0:
            assert validated.read_bytes() == before, "a failed run overwrote downstream data"
        return status

    return run


def fails_with(run, capsys, content, *patterns, **kwargs):
    assert run(content, **kwargs) == 1
    err = capsys.readouterr().err
    for pattern in patterns:
        assert pattern in err, f"{pattern!r} not in:\n{err}"
    return err


def test_empty_file(raw, capsys):
    fails_with(raw, capsys, "", "batch.inter", "empty")


def test_header_only(raw, capsys):
    fails_with(raw, capsys, HEADER, "batch.inter", "no interaction rows")


def test_missing_required_column(raw, capsys):
    content = "user_id:token\titem_id:token\trating:float\n1\t2\t3\n"
    fails_with(raw, capsys, content, "batch.inter", "missing column", "timestamp")


def test_mapping_names_a_column_the_file_lacks(raw, capsys):
    overrides = {"data": {"format": "generic", "generic": {"user_col": "customer"}}}
    content = "user_id,item_id,timestamp,rating\n1,2,1000000000,3\n"
    fails_with(raw, capsys, content, "batch.csv", "missing column", "customer", name="batch.csv",
               overrides=overrides)


def test_unparseable_timestamps(raw, capsys):
    content = HEADER + good_rows() + "u1\ti1\t3\tyesterday\n"
    fails_with(raw, capsys, content, "batch.inter", "timestamp", "yesterday")


def test_nan_and_empty_ids(raw, capsys):
    content = HEADER + good_rows() + "\ti1\t3\t1000000000\n u3 \t\t3\t1000000001\n"
    fails_with(raw, capsys, content, "user_id", "item_id")


def test_ratings_out_of_range(raw, capsys):
    content = HEADER + good_rows() + "u1\ti1\t11\t1000000000\n"
    fails_with(raw, capsys, content, "rating", "11")


def test_wrong_separator(raw, capsys):
    content = HEADER.replace("\t", ",") + good_rows().replace("\t", ",")
    fails_with(raw, capsys, content, "batch.inter", "missing column", "wrong separator")


def test_binary_garbage(raw, capsys):
    garbage = bytes(range(256)) * 40
    fails_with(raw, capsys, garbage, "batch.inter")


def test_truncated_last_line(raw, capsys):
    content = HEADER + good_rows() + "u9\ti3\t4"
    fails_with(raw, capsys, content, "batch.inter", "timestamp", "truncated")


def test_duplicated_rows_over_the_threshold(raw, capsys):
    rows = good_rows()
    fails_with(raw, capsys, HEADER + rows + rows.splitlines(keepends=True)[0] * 20, "repeat an earlier", "user_id, item_id, timestamp")


def test_utf8_bom_and_crlf_are_accepted(raw, project):
    content = ("\ufeff" + HEADER + good_rows()).replace("\n", "\r\n")
    assert raw(content) == 0
    import pandas as pd

    validated = pd.read_parquet(project().validation.interactions)
    assert set(validated.columns) >= {"user_id", "item_id", "timestamp", "rating"}
    assert not validated["timestamp"].isna().any() and validated["user_id"].str.startswith("u").all()


def test_unicode_and_very_long_ids_are_accepted(raw, project):
    long_id = "ü" * 2000
    rows = good_rows().replace("u1\t", "ユーザー①\t").replace("i3\t", f"{long_id}\t")
    assert raw(HEADER + rows) == 0
    import pandas as pd

    validated = pd.read_parquet(project().validation.interactions)
    assert "ユーザー①" in set(validated["user_id"]) and long_id in set(validated["item_id"])


def test_operator_checks_batches_before_dropping_them_in(project, tmp_path, capsys):
    project()
    good, bad = tmp_path / "good.inter", tmp_path / "bad.inter"
    good.write_text(HEADER + good_rows(n_users=2, per_user=3))  # small: size minimums are for the dataset
    bad.write_text(HEADER + good_rows(n_users=2, per_user=3) + "u1\ti1\t11\t1000000000\n")
    assert main(["validate", str(good)]) == 0
    assert "good.inter: " in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.inter" in err and "rating" in err and "11" in err


def test_operator_check_with_an_explicit_format(project, tmp_path, capsys):
    project()
    batch = tmp_path / "ratings.csv"
    batch.write_text("userId,movieId,rating,timestamp\n1,10,4.0,1000000000\n")
    assert main(["validate", str(batch), "--format", "movielens-csv"]) == 0
    assert main(["validate", str(batch)]) == 1  # read as recbole (params): no such columns
    assert "missing column" in capsys.readouterr().err


def test_missing_upstream_output_is_a_clear_error(project, capsys):
    project()
    assert main(["features"]) == 1
    assert "missing input data/validated/interactions.parquet" in capsys.readouterr().err
