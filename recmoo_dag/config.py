"""Typed schema of params.yaml: one pydantic model per pipeline stage, plus the global seed.

Unknown keys and wrong types are errors that name the key, so a typo in params.yaml cannot
silently fall back to a default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenericFormat(Section):
    """Column mapping for arbitrary CSV/TSV/Parquet/JSON-lines logs."""

    pattern: str = "*.csv"  # which files of the raw folder hold interactions
    file_type: Literal["csv", "parquet", "jsonl"] = "csv"
    sep: str = ","
    header: bool = True
    names: list[str] | None = None  # column names when the file has no header
    encoding: str = "utf-8"
    user_col: str = "user_id"
    item_col: str = "item_id"
    timestamp_col: str = "timestamp"
    rating_col: str | None = "rating"  # None: implicit feedback, no rating column
    event_col: str | None = None
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso", "strptime"] = "s"
    timestamp_format: str | None = None  # strptime pattern, only with timestamp_unit: strptime
    items_pattern: str | None = None  # optional item-metadata files in the same folder
    items_sep: str = ","
    item_id_col: str = "item_id"
    title_col: str | None = "title"
    categories_col: str | None = "categories"
    categories_sep: str = "|"

    @model_validator(mode="after")
    def _strptime_needs_format(self) -> GenericFormat:
        if self.timestamp_unit == "strptime" and not self.timestamp_format:
            raise ValueError("timestamp_unit 'strptime' needs timestamp_format (e.g. '%Y-%m-%d %H:%M:%S')")
        if not self.header and not self.names:
            raise ValueError("header: false needs names: the list of column names in file order")
        return self


class SyntheticSource(Section):
    """Shape of the log `fetch` writes with data.source: synthetic (tests, benchmarks, demos offline)."""

    users: int = Field(300, ge=1)
    items: int = Field(200, ge=1)
    events: int = Field(15_000, ge=1)
    categories: int = Field(8, ge=1)


class DataParams(Section):
    # recbole: the pinned RecBole 1.2.1 wheel copy of MovieLens-100K; grouplens: the original zip
    # (opt-in, bytes not pinned); synthetic: a log generated from data.synthetic and the seed.
    source: Literal["recbole", "grouplens", "synthetic"] = "recbole"
    synthetic: SyntheticSource = SyntheticSource()
    raw_dir: str = "data/raw"  # every log file below it is ingested, incoming/ batches included
    dataset_dir: str = "data/raw/ml-100k"  # where `fetch` puts MovieLens-100K
    incoming_dir: str = "data/raw/incoming"  # new log batches land here (watched by the Dagster sensor)
    format: Literal["recbole", "movielens-100k", "movielens-csv", "generic"] = "recbole"
    generic: GenericFormat = GenericFormat()
    interactions: str = "data/interactions.parquet"
    items: str = "data/items.parquet"
    stats: str = "metrics/ingest.json"


class ValidateParams(Section):
    interactions: str = "data/validated/interactions.parquet"
    items: str = "data/validated/items.parquet"
    report: str = "reports/validation.json"
    min_timestamp: int = 631152000  # 1990-01-01: older "events" are unit or clock errors
    max_timestamp: int = 2524608000  # 2050-01-01: later ones are milliseconds read as seconds
    rating_min: float = 0.0  # explicit ratings on common scales (0-5 stars, half stars)
    rating_max: float = 5.0
    max_duplicate_share: float = Field(0.01, ge=0, le=1)  # repeated (user, item, time) events beyond 1% mean a broken export
    min_users: int = 10  # below this a recommender has nothing to learn from
    min_items: int = 10
    min_interactions: int = 100
    max_failed_examples: int = 5  # offending values shown per failed expectation


class FeaturesParams(Section):
    dir: str = "data/features"
    min_user_interactions: int = Field(5, ge=3)  # leave-one-out needs >= 3: train, valid and test
    min_item_interactions: int = Field(5, ge=1)  # 5-core as in SASRec / RecBole setups
    stats: str = "metrics/features.json"


class OrchestrationParams(Section):
    """Dagster's sensor and schedule (recmoo_dag/defs). No DVC stage reads this section."""

    sensor_enabled: bool = True  # new batches in data.incoming_dir start a run while `recmoo ui` runs
    sensor_interval_seconds: int = Field(30, ge=1)  # a file must keep its size for two ticks to count as written
    schedule_enabled: bool = False  # periodic retraining is opt-in: turn it on here or in the UI
    schedule_cron: str = "0 3 * * 1"  # weekly (Monday 03:00): catches params, code or data changed meanwhile
    schedule_timezone: str = "UTC"


class Params(Section):
    seed: int = 42
    data: DataParams = DataParams()
    # `validate` would shadow BaseModel.validate: the attribute is `validation`, the key stays `validate`.
    validation: ValidateParams = Field(ValidateParams(), alias="validate")
    features: FeaturesParams = FeaturesParams()
    orchestration: OrchestrationParams = OrchestrationParams()


class ConfigError(ValueError):
    """params.yaml is missing, not YAML, or does not match the schema."""


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from err
