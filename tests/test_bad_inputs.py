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


def one_error_line(err: str, stage: str) -> str:
    """What the user reads: one `recmoo <stage>: error:` line, no traceback, no megabytes of input."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recmoo {stage}: error: "), err[:2000]
    assert len(err) < 2000, f"{len(err)} characters of stderr"
    return lines[0]


def fails_with(run, capsys, content, *patterns, **kwargs):
    assert run(content, **kwargs) == 1
    err = capsys.readouterr().err
    one_error_line(err, "ingest" if "recmoo ingest" in err else "validate")
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


# ------------------------------------------------------ one line per problem, never a traceback
def test_duplicate_column_header(raw, capsys):
    header = HEADER.replace("\n", "\tuser_id:token\n")
    fails_with(raw, capsys, header + good_rows().replace("\n", "\tu0\n"), "batch.inter",
               "'user_id:token' appears 2 times in the header")


def test_duplicate_column_after_recbole_types_are_stripped(raw, capsys):
    header = HEADER.replace("\n", "\ttimestamp:token\n")  # "timestamp:float" and "timestamp:token"
    fails_with(raw, capsys, header + good_rows().replace("\n", "\t7\n"), "batch.inter", "'timestamp'",
               "appears 2 times")


GENERIC = {"data": {"format": "generic", "generic": {"pattern": "*.csv"}}}


def test_duplicate_column_header_in_a_csv(raw, capsys):
    # pandas would rename the second one "user_id.1" and read the first: which one is meant is a guess.
    content = "user_id,item_id,rating,timestamp,user_id\n" + good_rows().replace("\t", ",").replace("\n", ",x\n")
    fails_with(raw, capsys, content, "batch.csv", "'user_id' appears 2 times", name="batch.csv", overrides=GENERIC)


def test_duplicate_column_in_a_parquet_file(project, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    project({"data": {"format": "generic", "generic": {"file_type": "parquet", "pattern": "*.parquet"}}})
    batch = tmp_path / "batch.parquet"
    columns = [pa.array(["u1"]), pa.array(["i1"]), pa.array([3.0]), pa.array([1_000_000_000]), pa.array(["u2"])]
    pq.write_table(pa.table(columns, names=["user_id", "item_id", "rating", "timestamp", "user_id"]), batch)
    assert main(["validate", str(batch)]) == 1
    line = one_error_line(capsys.readouterr().err, "validate")
    assert "batch.parquet" in line and "'user_id' appears 2 times" in line


def test_empty_header_cell(raw, capsys):
    content = ",item_id,rating,timestamp\n" + good_rows().replace("\t", ",")
    fails_with(raw, capsys, content, "batch.csv", "missing column", "user_id", "empty column name",
               name="batch.csv", overrides=GENERIC)


def test_non_utf8_text(raw, capsys):
    content = HEADER.encode() + "u1\ti1\t3\t1000000000\nüser\ti2\t3\t1000000001\n".encode("latin-1")
    fails_with(raw, capsys, content, "batch.inter", "utf-8", "encoding")


@pytest.mark.parametrize("column", ["timestamp", "rating"])
def test_a_huge_value_is_cut_in_the_message(raw, capsys, column):
    # One 5 MB field, as a line without its separators reads; the message quotes a few hundred characters.
    huge = "x" * 5_000_000
    row = f"u1\ti1\t{huge if column == 'rating' else 3}\t{huge if column == 'timestamp' else 1000000000}\n"
    err = fails_with(raw, capsys, HEADER + good_rows() + row, "batch.inter", repr(column), "xxxx")
    assert "5000002 characters" in err


def test_validate_paths_checks_every_file_and_reports_each_problem(project, tmp_path, capsys):
    project()
    small = HEADER + good_rows(n_users=2, per_user=3)
    files = {
        "duplicate.inter": HEADER.replace("\n", "\tuser_id:token\n") + good_rows(2, 3).replace("\n", "\tx\n"),
        "latin1.inter": (small + "üser\ti1\t3\t1000000000\n").encode("latin-1"),
        "rating.inter": small + "u1\ti1\t11\t1000000000\n",
        "good.inter": small,
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    paths = [str(tmp_path / name) for name in ("duplicate.inter", "missing.inter", "latin1.inter", "rating.inter",
                                               "good.inter")]
    assert main(["validate", *paths]) == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 4 and all(line.startswith("recmoo validate: error: ") for line in lines), err[:3000]
    for line, name, what in zip(lines, ("duplicate", "missing", "latin1", "rating"),
                                ("'user_id:token' appears 2 times", "no such file", "utf-8", "rating")):
        assert f"{name}.inter" in line and what in line, line
    assert "good.inter: " in out and "good.inter" not in err


@pytest.mark.parametrize(("content", "patterns"), [
    ("movie_title:token_seq\tclass:token_seq\nHeat\tAction\n",
     ("batch.item", "item metadata has no 'item_id' column")),
    (b"item_id:token\tmovie_title:token_seq\ni1\t" + "Amélie".encode("latin-1") + b"\n",
     ("batch.item", "cannot be read as 'recbole' item metadata", "encoding")),
])
def test_broken_item_metadata_beside_good_interactions(raw, capsys, content, patterns):
    Path("data/raw/batch.inter").write_text(HEADER + good_rows())
    fails_with(raw, capsys, content, *patterns, name="batch.item")
