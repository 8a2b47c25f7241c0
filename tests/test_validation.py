"""validate_interactions on tiny frames: each rule passes on clean data and fails, naming the column,
the rule and an offending value, on data that breaks it."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recmoo_dag.validation import validate_interactions
from tests.conftest import section

RULES = section("validate")  # min 10 users, 10 items, 100 rows; at most 1% repeated events
DUPLICATE_COLUMN = "user_id, item_id, timestamp"


def interactions(n: int = 200, n_users: int = 20, n_items: int = 30) -> pd.DataFrame:
    """A clean frame in the ingest schema: every (user, item, timestamp) distinct."""
    k = np.arange(n)
    return pd.DataFrame({
        "user_id": pd.Series([f"u{x % n_users}" for x in k], dtype="str"),
        "item_id": pd.Series([f"i{x % n_items}" for x in k], dtype="str"),
        "timestamp": (1_000_000_000 + 60 * k).astype("int64"),
        "rating": (k % 5 + 1).astype("float64"),
    })


def with_value(column: str, value, row: int = 3) -> pd.DataFrame:
    df = interactions()
    df.loc[row, column] = value
    return df


def only_failure(report) -> dict:
    assert not report.success
    assert len(report.failures) == 1, report.summary
    return report.failures[0]


def test_clean_frame_passes():
    report = validate_interactions(interactions(), RULES, source="data/interactions.parquet")
    assert report.success, report.summary
    assert report.failures == []
    n = report.statistics["evaluated_expectations"]
    assert n >= 12 and report.statistics["unsuccessful_expectations"] == 0
    assert report.summary == f"data/interactions.parquet: {n}/{n} expectations passed"
    assert report.gx_result["success"] is True


@pytest.mark.parametrize(
    ("frame", "column", "rule", "example"),
    [
        (with_value("user_id", None), "user_id", "must not be null", None),
        (with_value("item_id", None), "item_id", "must not be null", None),
        (with_value("user_id", ""), "user_id", "empty or whitespace-only", ""),
        (with_value("item_id", " \t"), "item_id", "empty or whitespace-only", " \t"),
        (with_value("item_id", "\u00a0\u3000"), "item_id", "empty or whitespace-only", "\u00a0\u3000"),
        (with_value("timestamp", 1_700_000_000_000), "timestamp", "must lie in", 1_700_000_000_000),
        (with_value("timestamp", 0), "timestamp", "must lie in", 0),
        (with_value("rating", 7.5), "rating", "must lie in [0.0, 5.0]", 7.5),
        (with_value("rating", -1.0), "rating", "must lie in [0.0, 5.0]", -1.0),
    ],
    ids=["null-user", "null-item", "empty-user", "blank-item", "unicode-blank-item", "ms-timestamp",
         "epoch-timestamp", "rating-high", "rating-negative"],
)
def test_row_rule_fails_naming_column_rule_and_value(frame, column, rule, example):
    report = validate_interactions(frame, RULES, source="batch.csv")
    failure = only_failure(report)
    assert failure["column"] == column
    assert rule in failure["rule"]
    assert failure["examples"] == [example]
    assert failure["unexpected_count"] == 1
    line = report.summary.splitlines()[1]
    assert line.strip().startswith(f"{column}: ") and rule in line and repr(example) in line
    assert report.summary.startswith("batch.csv: 1/")


def repeated(n_unique: int, n_repeats: int) -> pd.DataFrame:
    df = interactions(n_unique)
    return pd.concat([df, df.iloc[:n_repeats]], ignore_index=True)


def test_duplicate_share_counts_only_the_repeats():
    # 1 repeat in 150 rows is 0.67%: passes. Counting both copies (as GX's
    # ExpectCompoundColumnsToBeUnique does) would make it 1.33% and fail.
    assert validate_interactions(repeated(149, 1), RULES).success


def test_duplicate_share_above_limit_fails_with_the_event_key():
    report = validate_interactions(repeated(196, 4), RULES)  # 2% repeats
    failure = only_failure(report)
    assert failure["column"] == DUPLICATE_COLUMN
    assert "repeat an earlier" in failure["rule"]
    assert failure["unexpected_count"] == 4
    assert failure["examples"][0] == "user_id='u0', item_id='i0', timestamp=1000000000"
    assert "user_id='u0'" in report.summary


@pytest.mark.parametrize(
    ("frame", "column", "rule", "observed"),
    [
        (interactions(n_users=3), "user_id", "at least 10 distinct users", 3),
        (interactions(n_items=4), "item_id", "at least 10 distinct items", 4),
        (interactions(n=60), "(table)", "at least 100 interactions", 60),
    ],
    ids=["users", "items", "rows"],
)
def test_dataset_size_minimums(frame, column, rule, observed):
    report = validate_interactions(frame, RULES)
    failure = only_failure(report)
    assert (failure["column"], failure["observed_value"]) == (column, observed)
    assert rule in failure["rule"] and f"observed {observed}" in report.summary
    # a single incoming batch is not held to the size of the whole log
    assert validate_interactions(frame, RULES, whole_dataset=False).success


def test_whole_dataset_false_drops_size_expectations():
    tiny = interactions(n=5, n_users=2, n_items=2)
    assert len(validate_interactions(tiny, RULES).failures) == 3
    partial = validate_interactions(tiny, RULES, whole_dataset=False)
    assert partial.success, partial.summary
    types = {r["expectation_config"]["type"] for r in partial.gx_result["results"]}
    assert not types & {"expect_table_row_count_to_be_between", "expect_column_unique_value_count_to_be_between"}


def test_missing_column_fails_clearly_and_other_checks_still_run():
    df = with_value("user_id", None).drop(columns="rating")
    report = validate_interactions(df, RULES, source="raw/log.csv")
    assert not report.success
    assert [f["column"] for f in report.failures] == ["rating", "user_id"]
    missing = report.failures[0]
    assert missing["expectation"] == "column_schema" and "missing" in missing["rule"]
    assert "raw/log.csv" in report.summary and "rating: required column is missing" in report.summary


@pytest.mark.parametrize(
    ("column", "values", "found"),
    [
        ("timestamp", lambda df: df["timestamp"].astype(str), "str"),
        ("rating", lambda df: df["rating"].astype("int64"), "int64"),
        ("user_id", lambda df: pd.Series(range(len(df))), "int64"),
    ],
)
def test_wrong_dtype_fails_without_running_value_checks_on_it(column, values, found):
    df = interactions()
    df[column] = values(df)
    report = validate_interactions(df, RULES)
    failure = only_failure(report)
    assert failure["column"] == column and f"found {found}" in failure["rule"]
    assert failure["examples"]  # the first values, so the operator sees what arrived
    checked = {r["expectation_config"]["kwargs"].get("column") for r in report.gx_result["results"]}
    assert column not in checked


def test_object_dtype_ids_of_python_strings_pass():
    df = interactions().astype({"user_id": object, "item_id": object})
    assert validate_interactions(df, RULES).success


def test_all_nan_ratings_pass():
    df = interactions()
    df["rating"] = np.nan
    report = validate_interactions(df, RULES)
    assert report.success, report.summary


def test_unicode_and_very_long_ids_pass():
    df = interactions()
    df["user_id"] = pd.Series([f"ユーザー {x} ✓" for x in df["user_id"]], dtype="str")
    df["item_id"] = pd.Series([x.ljust(1000, "é") for x in df["item_id"]], dtype="str")
    assert df["item_id"].str.len().min() == 1000
    report = validate_interactions(df, RULES)
    assert report.success, report.summary


def test_optional_event_column_must_be_string():
    df = interactions()
    df["event"] = pd.Series(["click"] * len(df), dtype="str")
    assert validate_interactions(df, RULES).success
    df["event"] = 1
    assert only_failure(validate_interactions(df, RULES))["column"] == "event"


def test_report_is_strict_json_even_with_nan_examples():
    df = with_value("user_id", None)
    df.loc[5, "rating"] = 9.0
    report = validate_interactions(df, RULES)
    payload = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert set(payload) == {"success", "summary", "failures", "statistics", "gx_result"}
    assert payload["success"] is False and len(payload["failures"]) == 2
    assert payload["statistics"]["unsuccessful_expectations"] == 2


def test_input_frame_is_left_untouched():
    df = repeated(196, 4)
    before = df.copy()
    validate_interactions(df, RULES)
    pd.testing.assert_frame_equal(df, before)
