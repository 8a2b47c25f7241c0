"""Readers: every supported raw format lands in the same canonical schema."""

import numpy as np
import pandas as pd
import pytest

from recmoo_dag.data import drop_repeats, read_logs
from recmoo_dag.errors import DataError
from tests.conftest import section

EXPECTED = pd.DataFrame({
    "user_id": pd.array(["1", "1", "2"], dtype="string"),
    "item_id": pd.array(["10", "20", "10"], dtype="string"),
    "timestamp": np.array([1_000_000_000, 1_000_000_060, 1_000_000_120], dtype=np.int64),
    "rating": [4.0, 3.0, 5.0],
})


def assert_canonical(frame):
    pd.testing.assert_frame_equal(frame[list(EXPECTED.columns)].reset_index(drop=True), EXPECTED)


def test_recbole_atomic_files(tmp_path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                      "1\t10\t4\t1000000000\n1\t20\t3\t1000000060\n2\t10\t5\t1000000120\n")
    (tmp_path / "x.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                     "10\tHeat\tAction Crime\n20\tBabe\tChildren's\n")
    log = read_logs(tmp_path, "recbole", section("data.generic"))
    assert_canonical(log.interactions)
    assert log.items["categories"].tolist() == [["Action", "Crime"], ["Children's"]]
    assert log.items["title"].tolist() == ["Heat", "Babe"]


def test_original_movielens_100k_files(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t1000000000\n1\t20\t3\t1000000060\n2\t10\t5\t1000000120\n")
    flags = ["0"] * 19
    flags[1] = flags[6] = "1"  # Action, Crime
    line = "|".join(["10", "Heat (1995)", "01-Jan-1995", "", "http://x"] + flags)
    (tmp_path / "u.item").write_bytes((line + "\n").encode("latin-1") +
                                      "20|Amélie (2001)|01-Jan-2001||http://y|".encode("latin-1") +
                                      ("|".join(["0"] * 18 + ["1"]) + "\n").encode("latin-1"))
    log = read_logs(tmp_path, "movielens-100k", section("data.generic"))
    assert_canonical(log.interactions)
    assert log.items["categories"].tolist() == [["Action", "Crime"], ["Western"]]
    assert log.items["title"].tolist()[1] == "Amélie (2001)"


def test_movielens_csv(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,1000000000\n"
                                          "1,20,3.0,1000000060\n2,10,5.0,1000000120\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n10,"Heat, The",Action|Crime\n'
                                         "20,Babe,(no genres listed)\n")
    log = read_logs(tmp_path, "movielens-csv", section("data.generic"))
    assert_canonical(log.interactions)
    assert log.items["categories"].tolist() == [["Action", "Crime"], []]


@pytest.mark.parametrize("spec, content, name", [
    ({"sep": "\t", "user_col": "u", "item_col": "i", "timestamp_col": "t", "rating_col": "r"},
     "u\ti\tt\tr\n1\t10\t1000000000\t4\n1\t20\t1000000060\t3\n2\t10\t1000000120\t5\n", "log.csv"),
    ({"header": False, "names": ["user_id", "item_id", "rating", "timestamp"], "sep": ";"},
     "1;10;4;1000000000\n1;20;3;1000000060\n2;10;5;1000000120\n", "log.csv"),
    ({"timestamp_unit": "ms"},
     "user_id,item_id,timestamp,rating\n1,10,1000000000000,4\n1,20,1000000060999,3\n2,10,1000000120000,5\n",
     "log.csv"),
    ({"timestamp_unit": "iso"},
     ("user_id,item_id,timestamp,rating\n1,10,2001-09-09T01:46:40Z,4\n1,20,2001-09-09T01:47:40+00:00,3\n"
     "2,10,2001-09-09 03:48:40+02:00,5\n"), "log.csv"),
    ({"timestamp_unit": "strptime", "timestamp_format": "%d/%m/%Y %H:%M:%S"},
     ("user_id,item_id,timestamp,rating\n1,10,09/09/2001 01:46:40,4\n1,20,09/09/2001 01:47:40,3\n"
     "2,10,09/09/2001 01:48:40,5\n"), "log.csv"),
    ({"file_type": "jsonl", "pattern": "*.jsonl"},
     ('{"user_id": 1, "item_id": 10, "timestamp": 1000000000, "rating": 4}\n'
     '{"user_id": 1, "item_id": 20, "timestamp": 1000000060, "rating": 3}\n'
     '{"user_id": 2, "item_id": 10, "timestamp": 1000000120, "rating": 5}\n'), "log.jsonl"),
])
def test_generic_reader_mappings(tmp_path, spec, content, name):
    (tmp_path / name).write_text(content)
    log = read_logs(tmp_path, "generic", section("data.generic", **spec))
    assert_canonical(log.interactions)
    assert log.items is None


def test_generic_parquet_and_implicit_feedback(tmp_path):
    frame = pd.DataFrame({"uid": [1, 1, 2], "iid": ["10", "20", "10"], "ts": [1_000_000_000, 1_000_000_060,
                                                                          1_000_000_120], "kind": "click"})
    frame.to_parquet(tmp_path / "log.parquet")
    spec = section("data.generic", file_type="parquet", pattern="*.parquet", user_col="uid", item_col="iid",
                         timestamp_col="ts", rating_col=None, event_col="kind")
    log = read_logs(tmp_path, "generic", spec)
    assert log.interactions["rating"].isna().all()
    assert log.interactions["event"].tolist() == ["click"] * 3
    assert log.interactions["user_id"].tolist() == ["1", "1", "2"]


def test_ids_stay_strings_with_leading_zeros(tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,rating\n007,0010,1000000000,4\n")
    log = read_logs(tmp_path, "generic", section("data.generic"))
    assert log.interactions.loc[0, "user_id"] == "007"
    assert log.interactions.loc[0, "item_id"] == "0010"


def test_batches_read_in_order_and_redeliveries_dropped(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (tmp_path / "incoming").mkdir()
    (tmp_path / "a.inter").write_text(header + "1\t10\t4\t1000000000\n1\t20\t3\t1000000060\n")
    (tmp_path / "incoming" / "b.inter").write_text(header + "1\t20\t3\t1000000060\n2\t10\t5\t1000000120\n")
    (tmp_path / "incoming" / "c.inter.part").write_text(header + "9\t9\t1\t1000000000\n")  # still being written
    log = read_logs(tmp_path, "recbole", section("data.generic"))
    assert_canonical(log.interactions)
    assert [p.name for p in log.files] == ["a.inter", "b.inter"]


def test_repeats_inside_one_file_are_kept_for_validation_to_judge(tmp_path):
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (tmp_path / "a.inter").write_text(header + "1\t10\t4\t1000000000\n" * 3)
    assert len(read_logs(tmp_path, "recbole", section("data.generic")).interactions) == 3


def test_no_matching_files_names_the_pattern(tmp_path):
    with pytest.raises(DataError, match=r"no interaction files matching '\*\.inter'"):
        read_logs(tmp_path, "recbole", section("data.generic"))


def test_a_date_spread_over_columns_is_read_as_one(tmp_path):
    """Last.fm's tagging log: day, month and year in three columns, no time of day, no rating."""
    (tmp_path / "tags.dat").write_text("userID\tartistID\ttagID\tday\tmonth\tyear\n"
                                       "2\t52\t13\t1\t4\t2009\n2\t52\t15\t1\t4\t2009\n3\t7\t1\t30\t12\t2010\n")
    spec = section("data.generic", pattern="tags.dat", sep="\t", user_col="userID", item_col="artistID",
                         timestamp_col=["year", "month", "day"], timestamp_unit="strptime",
                         timestamp_format="%Y-%m-%d", rating_col=None)
    frame = read_logs(tmp_path, "generic", spec).interactions
    assert frame["timestamp"].tolist() == [1238544000, 1238544000, 1293667200]  # 2009-04-01, 2010-12-30 UTC
    assert frame["rating"].isna().all()
    with pytest.raises(ValueError, match="need timestamp_unit strptime"):
        section("data.generic", timestamp_col=["year", "month", "day"])
    (tmp_path / "tags.dat").write_text("userID\tartistID\ttagID\tday\tmonth\tyear\n2\t52\t13\t31\t2\t2009\n")
    with pytest.raises(DataError, match="column 'year-month-day': 1 unparseable timestamp"):
        read_logs(tmp_path, "generic", spec)


def test_repeated_user_item_events_all_first_or_last():
    frame = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": ["x", "x", "y", "x"],
                          "timestamp": [30, 10, 20, 10], "rating": [1.0, 2.0, 3.0, 4.0]})
    assert drop_repeats(frame, "all").equals(frame)
    assert drop_repeats(frame, "first")["rating"].tolist() == [2.0, 3.0, 4.0]  # a-x at 10, not 30
    assert drop_repeats(frame, "last")["rating"].tolist() == [1.0, 3.0, 4.0]
