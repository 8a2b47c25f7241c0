"""Data-quality gate on the canonical interactions table, as a Great Expectations (GX) suite.

This is the one module that imports great_expectations. The suite is built in code on every call
and run in an ephemeral context, so there is no GX project folder to keep in sync with
params.yaml: `ValidateParams` is the single source of the rules.

Two checks happen in plain pandas before GX runs, because GX handles them badly:
- column presence and dtype: a GX expectation on a missing or wrongly typed column does not fail
  with a message, it records an internal exception ("Column values, min_value, and max_value must
  either be None or of the same type"); and GX 1.24's type expectation cannot match pandas 3's
  default string dtype (`str`, i.e. `StringDtype(na_value=nan)`) under any type name.
  Value expectations are only added for columns whose schema is right.
- which rows repeat an earlier (user_id, item_id, timestamp): `ExpectCompoundColumnsToBeUnique`
  counts every member of a duplicate group (one repeated row = 2 unexpected), so its `mostly`
  is not the share `max_duplicate_share` is defined as. We mark the repeats with
  `DataFrame.duplicated(keep="first")` and let GX check the share of marked rows.
"""
from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache

import pandas as pd
from pandas.api import types as ptypes

from recmoo_dag.config import ValidateParams
from recmoo_dag.errors import quote

# column -> (dtype family, predicate); the ingest stage writes exactly these.
SCHEMA = {
    "user_id": ("string", ptypes.is_string_dtype),
    "item_id": ("string", ptypes.is_string_dtype),
    "timestamp": ("integer", ptypes.is_integer_dtype),
    "rating": ("float", ptypes.is_float_dtype),
}
OPTIONAL_SCHEMA = {"event": ("string", ptypes.is_string_dtype)}
EVENT_KEY = ["user_id", "item_id", "timestamp"]
# Extra column handed to GX only: the event key for rows that repeat an earlier one, else null.
_REPEAT_COLUMN = "repeat_of_earlier_event"


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of one validation run.

    `failures` holds one dict per failed check: expectation (GX type, or "column_schema"),
    column, rule (human text), examples (up to max_failed_examples offending values; for
    table-level checks such as row counts, the observed value), unexpected_count (offending
    rows) and observed_value (table-level checks only, else None).
    """

    success: bool
    summary: str
    failures: list[dict]
    statistics: dict
    gx_result: dict

    def to_json(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """The summary on one line, each failed check after " | ": what `recmoo validate` prints."""
        head, *failures = self.summary.splitlines()
        return " | ".join([head, *(f.strip() for f in failures)])


def validate_interactions(
    df: pd.DataFrame, rules: ValidateParams, *, whole_dataset: bool = True, source: str = "interactions"
) -> ValidationReport:
    """Check an interactions frame against `rules`; never raises on bad data, only reports it.

    `whole_dataset=False` is for a single incoming batch: the size minimums (users, items, rows)
    only make sense for the full log. `source` (e.g. the file path) names the data in the summary.
    Raises RuntimeError if GX itself fails to evaluate an expectation: that is a bug, not bad data.
    """
    schema_failures = _schema_failures(df, rules.max_failed_examples)
    bad_columns = {f["column"] for f in schema_failures}
    usable = [c for c in df.columns if c in SCHEMA and c not in bad_columns]

    frame = df
    if all(c in usable for c in EVENT_KEY):
        frame = df.assign(**{_REPEAT_COLUMN: _repeat_marker(df)})

    expectations = _expectations(usable, rules, whole_dataset)
    gx_result = _run_suite(frame, expectations, rules.max_failed_examples, source)

    failures = schema_failures + [_failure(r) for r in gx_result["results"] if not r["success"]]
    n_checks = len(SCHEMA) + sum(c in df.columns for c in OPTIONAL_SCHEMA) + len(gx_result["results"])
    statistics = {
        "evaluated_expectations": n_checks,
        "successful_expectations": n_checks - len(failures),
        "unsuccessful_expectations": len(failures),
        "success_percent": 100.0 * (n_checks - len(failures)) / n_checks,
    }
    return ValidationReport(
        success=not failures,
        summary=_summary(source, n_checks, failures),
        failures=failures,
        statistics=statistics,
        gx_result=gx_result,
    )


def _schema_failures(df: pd.DataFrame, n_examples: int) -> list[dict]:
    failures = []
    for column, (family, is_family) in {**SCHEMA, **OPTIONAL_SCHEMA}.items():
        if column not in df.columns:
            if column in SCHEMA:
                rule = f"required column is missing (the frame has columns {list(df.columns)})"
                failures.append(_schema_failure(column, rule, [], len(df)))
        elif not is_family(df[column].dtype):
            rule = f"dtype must be {family}, found {df[column].dtype} (fix the ingest stage)"
            examples = [_plain(v) for v in df[column].head(n_examples)]
            failures.append(_schema_failure(column, rule, examples, len(df)))
    return failures


def _schema_failure(column: str, rule: str, examples: list, count: int) -> dict:
    return {"expectation": "column_schema", "column": column, "rule": rule, "examples": examples,
            "unexpected_count": count, "observed_value": None}


def _repeat_marker(df: pd.DataFrame) -> pd.Series:
    """The event key as text for rows repeating an earlier (user_id, item_id, timestamp), else None.

    Text, not dicts: GX fingerprints the batch with `hash_pandas_object` and falls back to
    pickling the whole frame when a column holds unhashable values.
    """
    # Only rows sharing a timestamp can repeat a key; hashing just those string ids instead of
    # all of them makes this ~10x faster at 10M rows.
    candidates = df["timestamp"].duplicated(keep=False)
    repeats = pd.Series(False, index=df.index)
    repeats[candidates] = df.loc[candidates, EVENT_KEY].duplicated(keep="first")
    marker = pd.Series(None, index=df.index, dtype=object)
    marker[repeats] = [
        f"user_id={u!r}, item_id={i!r}, timestamp={t}"
        for u, i, t in df.loc[repeats, EVENT_KEY].itertuples(index=False)
    ]
    return marker


@cache
def _blank_regex() -> str:
    r"""Matches empty or whitespace-only ids, as `^\s*$` would.

    Spelled as a class of literal characters because pandas runs `\s` through Python's `re` row by
    row (RE2's `\s` misses some whitespace); the literal class goes to pyarrow, ~10x faster
    (0.05 s vs 0.5 s per million ids). Cached: scanning all code points takes ~0.15 s.
    """
    whitespace = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    return f"^[{re.escape(whitespace)}]*$"


BLANK_RULE = "must not be empty or whitespace-only"


def timestamp_rule(rules: ValidateParams) -> str:
    lo, hi = (datetime.fromtimestamp(t, UTC).date() for t in (rules.min_timestamp, rules.max_timestamp))
    return (f"must lie in [{rules.min_timestamp}, {rules.max_timestamp}] seconds UTC ({lo} .. {hi}); "
            "values far above are usually milliseconds read as seconds")


def event_failures(user_id: str, item_id: str, timestamp: int, rules: ValidateParams) -> list[tuple[str, str]]:
    """(column, rule) of each rule of the suite that one event breaks on its own: a blank id, a time out
    of range. Plain Python for POST /events (recmoo_dag/events.py), where a GX run per request would cost
    more than the request; types and nulls are the request schema's business there, and the rules over
    many rows (the repeat share, the size minimums) judge the whole log when it is ingested."""
    failures = [(column, BLANK_RULE) for column, value in (("user_id", user_id), ("item_id", item_id))
                if not value.strip()]  # str.strip removes exactly the characters _blank_regex matches
    if not rules.min_timestamp <= timestamp <= rules.max_timestamp:
        failures.append(("timestamp", timestamp_rule(rules)))
    return failures


def _expectations(usable: list[str], rules: ValidateParams, whole_dataset: bool) -> list:
    """The GX expectations for the columns that passed the schema check, each tagged with the
    column label and rule text that the report shows."""
    import great_expectations as gx

    E = gx.expectations
    out = []

    def add(cls, label: str, rule: str, **kwargs) -> None:
        out.append(cls(**kwargs, meta={"column": label, "rule": rule}))

    for column in ("user_id", "item_id"):
        if column in usable:
            add(E.ExpectColumnValuesToNotBeNull, column, "must not be null", column=column)
            add(E.ExpectColumnValuesToNotMatchRegex, column, BLANK_RULE, column=column, regex=_blank_regex())
    if "timestamp" in usable:
        add(E.ExpectColumnValuesToNotBeNull, "timestamp", "must not be null", column="timestamp")
        add(E.ExpectColumnValuesToBeBetween, "timestamp", timestamp_rule(rules),
            column="timestamp", min_value=rules.min_timestamp, max_value=rules.max_timestamp)
    if "rating" in usable:
        # GX skips nulls in column-map expectations, so an all-NaN implicit-feedback column passes
        add(E.ExpectColumnValuesToBeBetween, "rating",
            f"must lie in [{rules.rating_min}, {rules.rating_max}] when present",
            column="rating", min_value=rules.rating_min, max_value=rules.rating_max)
    if all(c in usable for c in EVENT_KEY):
        add(E.ExpectColumnValuesToBeNull, ", ".join(EVENT_KEY),
            f"at most {rules.max_duplicate_share:.2%} of rows may repeat an earlier "
            "(user_id, item_id, timestamp)",
            column=_REPEAT_COLUMN, mostly=1.0 - rules.max_duplicate_share)
    if whole_dataset:
        for column, minimum, noun in (("user_id", rules.min_users, "users"), ("item_id", rules.min_items, "items")):
            if column in usable:
                add(E.ExpectColumnUniqueValueCountToBeBetween, column,
                    f"needs at least {minimum} distinct {noun}", column=column, min_value=minimum)
        add(E.ExpectTableRowCountToBeBetween, "(table)",
            f"needs at least {rules.min_interactions} interactions", min_value=rules.min_interactions)
    return out


def _run_suite(frame: pd.DataFrame, expectations: list, n_examples: int, source: str) -> dict:
    """Validate `frame` in a throw-away ephemeral GX context; returns the result as a JSON dict."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # tqdm bars on stderr would drown the stage's own log lines
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("recmoo")
        .add_dataframe_asset("interactions")
        .add_batch_definition_whole_dataframe("whole_frame")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="interactions", expectations=expectations)
    # SUMMARY with a few partial values: COMPLETE would materialise every offending row
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": n_examples}
    result = batch.validate(suite, result_format=result_format).to_json_dict()
    # The load time is the one field that changes between identical runs: without it the report is
    # byte-identical across reruns (DVC and Dagster runs of the stage give the same artifact).
    result.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
    for r in result["results"]:
        if message := _exception_message(r["exception_info"]):
            config = r["expectation_config"]
            raise RuntimeError(
                f"{source}: Great Expectations could not evaluate {config['type']} on "
                f"{config['meta']['column']}: {message}"
            )
    return result


def _exception_message(info: dict) -> str | None:
    # GX reports either one {"raised_exception": ...} dict or one such dict per failed metric
    infos = [info] if "raised_exception" in info else list(info.values())
    messages = [i["exception_message"] for i in infos if i.get("raised_exception")]
    return "; ".join(messages) or None


def _failure(result: dict) -> dict:
    config, outcome = result["expectation_config"], result["result"]
    observed = outcome.get("observed_value")
    return {
        "expectation": config["type"],
        "column": config["meta"]["column"],
        "rule": config["meta"]["rule"],
        "examples": outcome.get("partial_unexpected_list", [observed]),
        "unexpected_count": outcome.get("unexpected_count", 0),
        "observed_value": observed,
    }


def _summary(source: str, n_checks: int, failures: list[dict]) -> str:
    if not failures:
        return f"{source}: {n_checks}/{n_checks} expectations passed"
    lines = [f"{source}: {len(failures)}/{n_checks} expectations failed"]
    for f in failures:
        line = f"  {f['column']}: {f['rule']}"
        if f["observed_value"] is not None:
            line += f"; observed {f['observed_value']}"
        elif f["examples"]:
            examples = ", ".join(quote(e, limit=60) for e in f["examples"])
            line += f"; {f['unexpected_count']} offending rows, e.g. [{examples}]"
        lines.append(line)
    return "\n".join(lines)


def _plain(value):
    """A JSON-friendly Python scalar for a pandas/numpy value (NaN/NA become None)."""
    if ptypes.is_scalar(value) and pd.isna(value):
        return None
    return value.item() if hasattr(value, "item") else value


def without_repeats(df: pd.DataFrame) -> pd.DataFrame:
    """The validated table: exact repeats of an event passed the duplicate-share rule (they are rare),
    but the model must not see them twice; the first of each is kept."""
    return df.drop_duplicates(EVENT_KEY, keep="first")
