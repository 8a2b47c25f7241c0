"""Typed schema of params.yaml: one pydantic model per pipeline stage, plus the global seed.

params.yaml holds every value and the reason for it; this module holds the types and the bounds,
and no defaults: a key missing from params.yaml, an unknown key or a wrong type is an error that
names the key, so a typo cannot silently fall back to a value written somewhere else.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from recmoo_dag.errors import ConfigError
from recmoo_dag.objectives import CATALOGUE, JUDGED, OBJECTIVES

PARAMS_FILE = Path("params.yaml")


class _ProjectPathMarker:
    """Marks a params value that names a file or folder of the project (checked by `confine_paths`)."""


ProjectPath = Annotated[str, _ProjectPathMarker()]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenericItems(Section):
    """Optional item-metadata files of a generic log, in the same folder."""

    pattern: str | None
    sep: str
    item_id_col: str
    title_col: str | None
    categories_col: str | None
    categories_sep: str


class GenericTags(Section):
    """Optional files of (item, tag) rows: the tags users gave items, free text for item_text."""

    pattern: str | None
    sep: str
    item_col: str
    tag_col: str


class GenericTagNames(Section):
    """Optional (tag id, name) lookup files, where the tags are ids."""

    pattern: str | None
    sep: str
    id_col: str
    name_col: str
    encoding: str


class GenericFormat(Section):
    """Column mapping for arbitrary CSV/TSV/Parquet/JSON-lines logs (data.format: generic)."""

    pattern: str
    file_type: Literal["csv", "parquet", "jsonl"]
    sep: str
    header: bool
    names: list[str] | None
    encoding: str
    user_col: str
    item_col: str
    timestamp_col: str | list[str]
    rating_col: str | None
    event_col: str | None
    timestamp_unit: Literal["s", "ms", "us", "ns", "iso", "strptime"]
    timestamp_format: str | None
    items: GenericItems
    tags: GenericTags
    tag_names: GenericTagNames

    @model_validator(mode="after")
    def _strptime_needs_format(self) -> GenericFormat:
        if self.timestamp_unit == "strptime" and not self.timestamp_format:
            raise ValueError("timestamp_unit 'strptime' needs timestamp_format (e.g. '%Y-%m-%d %H:%M:%S')")
        if isinstance(self.timestamp_col, list) and self.timestamp_unit != "strptime":
            raise ValueError("several timestamp columns are joined with '-' and need timestamp_unit strptime "
                             "with a timestamp_format such as '%Y-%m-%d'")
        if not self.header and not self.names:
            raise ValueError("header: false needs names: the list of column names in file order")
        return self


class SyntheticSource(Section):
    """Shape of the log `fetch` writes with data.source: synthetic."""

    users: int = Field(ge=1)
    items: int = Field(ge=1)
    events: int = Field(ge=1)
    categories: int = Field(ge=1)


class DataParams(Section):
    source: Literal["recbole", "grouplens", "synthetic", "local"]
    synthetic: SyntheticSource
    raw_dir: ProjectPath
    dataset_dir: ProjectPath
    incoming_dir: ProjectPath
    format: Literal["recbole", "movielens-100k", "movielens-csv", "generic"]
    generic: GenericFormat
    repeats: Literal["all", "first", "last"]
    interactions: ProjectPath
    items: ProjectPath
    stats: ProjectPath

    @model_validator(mode="after")
    def _dataset_inside_raw(self) -> DataParams:
        # Normalized first: 'data/raw/../../etc' is lexically below data/raw and names /etc.
        if not Path(os.path.normpath(self.dataset_dir)).is_relative_to(os.path.normpath(self.raw_dir)):
            raise ValueError(f"data.dataset_dir {self.dataset_dir!r} must lie inside data.raw_dir {self.raw_dir!r}: "
                             "ingest reads every log below raw_dir")
        return self


class ValidateParams(Section):
    interactions: ProjectPath
    items: ProjectPath
    report: ProjectPath
    min_timestamp: int
    max_timestamp: int
    rating_min: float
    rating_max: float
    max_duplicate_share: float = Field(ge=0, le=1)
    min_users: int
    min_items: int
    min_interactions: int
    max_failed_examples: int


class FeaturesParams(Section):
    dir: ProjectPath
    min_user_interactions: int = Field(ge=1)
    min_item_interactions: int = Field(ge=1)
    include_metadata_items: bool
    split: Literal["global_time", "user_tail", "leave_one_out"]
    valid_quantile: float = Field(gt=0, lt=1)
    test_quantile: float = Field(gt=0, lt=1)
    tail_fraction: float = Field(gt=0, lt=0.5)
    tail_max_baskets: int = Field(ge=1)
    min_window_users: int = Field(ge=2)
    stats: ProjectPath

    @model_validator(mode="after")
    def _ordered(self) -> FeaturesParams:
        if not self.valid_quantile < self.test_quantile:
            raise ValueError(f"features.valid_quantile {self.valid_quantile} must be below test_quantile "
                             f"{self.test_quantile}: the valid window comes before the test window")
        return self


class EvaluationParams(Section):
    """How every verdict is judged (recmoo_dag/uncertainty.py): intervals from a seeded bootstrap over users."""

    replicates: int = Field(ge=100)
    level: float = Field(gt=0.5, lt=1.0)


class ModelParams(Section):
    """Architecture of the transformer: the kwargs of `SeqRecModel` (recmoo_dag/model.py)."""

    d_model: int = Field(ge=8)
    n_heads: int = Field(ge=1)
    n_layers: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)
    max_len: int = Field(ge=2)
    item_text: Literal["none", "init", "fuse"]
    id_dropout: float = Field(ge=0, lt=1)


class TrainParams(Section):
    """Training (Lightning), its checkpoints, and the accuracy report against the baselines."""

    model_dir: ProjectPath
    checkpoint_dir: ProjectPath
    metrics: ProjectPath
    steps_log: ProjectPath
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    lr_schedule: Literal["constant", "cosine"]
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    label_smoothing: float = Field(ge=0, lt=1)
    max_steps: int = Field(ge=1)
    max_seconds: float | None = Field(gt=0)
    eval_every_steps: int = Field(ge=1)
    patience: int = Field(ge=1)
    min_improvement_se: float = Field(ge=0)
    ease_lambdas: list[float]
    eval_batch_size: int = Field(ge=1)
    eval_users: int | None = Field(ge=50)
    accelerator: str
    devices: int | str
    strategy: str
    num_nodes: int = Field(ge=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "64-true"]
    compile: bool
    threads: int = Field(ge=0)


class ItemTextParams(Section):
    """Item texts and their sentence embeddings (recmoo_dag/item_text.py)."""

    model: str
    fields: list[Literal["title", "categories", "tags"]]
    max_tags: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    threads: int = Field(ge=1)
    device: str
    dir: ProjectPath
    metrics: ProjectPath


class TuneSpace(Section):
    """Where the tuning stage searches: (low, high) ranges and lists of choices."""

    lr: tuple[float, float]
    weight_decay: tuple[float, float]
    dropout: tuple[float, float]
    d_model: list[int]
    n_layers: list[int]
    max_len: list[int]
    batch_size: list[int]
    item_text: list[Literal["none", "init", "fuse"]]

    @model_validator(mode="after")
    def _ordered(self) -> TuneSpace:
        for name in ("lr", "weight_decay", "dropout"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"tune.space.{name}: the low end {low} must be below the high end {high}")
        return self


class TuneParams(Section):
    """Optuna over the transformer and its training (recmoo_dag/tune.py); `train` reads the choice."""

    enabled: bool
    trials: int = Field(ge=1)
    timeout_seconds: float | None = Field(gt=0)
    trial_steps: int = Field(ge=1)
    startup_trials: int = Field(ge=1)
    storage: ProjectPath
    workdir: ProjectPath
    chosen: ProjectPath
    report_dir: ProjectPath
    metrics: ProjectPath
    space: TuneSpace


class CandidatesParams(Section):
    path: ProjectPath
    n: int = Field(ge=1)
    batch_size: int = Field(ge=1)


class ExposureParams(Section):
    """The exposure prices solved across users (recmoo_dag/exposure.py)."""

    cap_slack: float = Field(gt=1)  # 1 would ask every item for exactly its equal share
    floor: float = Field(ge=0)
    iterations: int = Field(ge=1)
    prices: ProjectPath
    metrics: ProjectPath


class OrchestrationParams(Section):
    """Dagster's sensors, schedule, remote and executor (recmoo_dag/defs). No DVC stage reads them."""

    sensor_enabled: bool
    sensor_interval_seconds: int = Field(ge=1)
    sync_enabled: bool
    sync_interval_seconds: int = Field(ge=1)
    schedule_enabled: bool
    schedule_cron: str
    schedule_timezone: str
    reprice_enabled: bool
    reprice_cron: str
    remote: str | None
    executor: Literal["in_process", "multiprocess", "k8s"]


SearchObjective = Literal[OBJECTIVES]
Objective = Literal[JUDGED]  # "higher is better": what the decision rules, bounds and gate judge
Preferred = Literal[JUDGED + CATALOGUE]  # what the constrained rule may rank by: a judged objective or the catalogue's


class PolicyParams(Section):
    """The re-ranker (recmoo_dag/policy.py): list length, similarity space, fitted serving cost."""

    k: int = Field(ge=2)  # ILD needs pairs
    similarity: Literal["auto", "categories", "text", "embeddings"]
    latency_intercept_ms: float = Field(ge=0)
    latency_per_candidate_ms: float = Field(ge=0)

    @property
    def latency(self) -> tuple[float, float]:
        return self.latency_intercept_ms, self.latency_per_candidate_ms


class SearchParams(Section):
    """The Pareto search over policies (recmoo_dag/search.py) and its baselines."""

    algorithm: Literal["auto", "nsga2", "nsga3"]
    objectives: list[SearchObjective]
    n_evals: int | None = Field(ge=1)
    n_gen: int | None = Field(ge=1)
    pop_size: int = Field(ge=4)
    reference_point: float = Field(gt=1)
    front_epsilon: float = Field(ge=0.0)
    mmr_pool: int = Field(ge=1)
    baskets: int | None = Field(ge=50)
    ndcg_floor: float | None = Field(gt=0, le=1)
    rescore_policies: int = Field(ge=2)
    stall_generations: int | None = Field(ge=2)
    stall_tolerance: float = Field(ge=0)
    threads: int = Field(ge=1)
    report_dir: ProjectPath
    metrics: ProjectPath

    @model_validator(mode="after")
    def _one_budget(self) -> SearchParams:
        if (self.n_evals is None) == (self.n_gen is None):
            raise ValueError("set exactly one of search.n_evals and search.n_gen (the other: null)")
        if len(set(self.objectives)) != len(self.objectives) or len(self.objectives) < 2:
            raise ValueError("search.objectives needs at least 2 distinct objectives")
        return self

    @property
    def front(self) -> str:
        return self.front_of(0)

    def front_of(self, split: int) -> str:
        """The front found on the selection users of the valid users' `split`-th split (deploy.splits)."""
        return f"{self.report_dir}/front.csv" if split == 0 else f"{self.report_dir}/front_split{split}.csv"


class DeployParams(Section):
    """Which policy of the front is served, and when it may replace the served one (recmoo_dag/deploy.py)."""

    rule: Literal["constrained", "asf", "pseudo_weights", "knee"]
    select_on: Literal["valid", "test"]
    maximize: Preferred
    min_ratio: dict[Objective, float]
    confidence: float = Field(ge=0.5, lt=1.0)
    confirm_share: float = Field(ge=0.0, lt=1.0)
    shortlist: int = Field(ge=1)
    splits: int = Field(ge=1)
    weights: dict[Objective, float]
    tolerance: dict[Objective, float]
    fallback: Literal["accuracy_only", "none"]
    store: ProjectPath
    metrics: ProjectPath

    @property
    def searched_splits(self) -> int:
        """How many splits of the valid users the search finds a front on: one per retry of the rule,
        when it chooses on valid with confirmation users (else a new split would change nothing)."""
        return self.splits if self.select_on == "valid" and self.confirm_share > 0 else 1


class ServeParams(Section):
    """The HTTP service of the deployed policy (recmoo_dag/serve.py)."""

    host: str
    port: int = Field(ge=1, le=65535)
    workers: int = Field(ge=1)
    default_k: int = Field(ge=1)
    max_k: int = Field(ge=1)
    max_recent_items: int = Field(ge=1)
    session_window: int = Field(ge=1)
    max_exclude: int = Field(ge=0)
    max_body_bytes: int = Field(ge=1024)
    reload_check_ms: int = Field(ge=0)
    torch_threads: int = Field(ge=1)
    # Micro-batching of forward passes (recmoo_dag/batcher.py): a longer wait is latency, not batching.
    batch_wait_ms: float = Field(ge=0, le=50)
    max_batch: int = Field(ge=1, le=1024)
    queue_size: int = Field(ge=1)
    history_cache_mb: int = Field(ge=0)
    forward_process: bool
    # The upper bounds keep each deadline a deadline: beyond them an attacker holds a connection
    # about as long as the unbounded server let it.
    header_timeout_s: float = Field(gt=0, le=60)
    body_timeout_s: float = Field(gt=0, le=300)
    max_head_bytes: int = Field(ge=1024, le=1 << 20)
    max_connections: int = Field(ge=1)
    # POST /events (recmoo_dag/events.py)
    events_log_dir: ProjectPath
    events_max_batch: int = Field(ge=1)
    events_roll_count: int = Field(ge=1)
    events_roll_seconds: float = Field(gt=0)
    events_max_users: int = Field(ge=1)


class Params(Section):
    seed: int
    data: DataParams
    # `validate` would shadow BaseModel.validate: the attribute is `validation`, the key stays `validate`.
    validation: ValidateParams = Field(alias="validate")
    features: FeaturesParams
    evaluation: EvaluationParams
    model: ModelParams
    item_text: ItemTextParams
    tune: TuneParams
    train: TrainParams
    candidates: CandidatesParams
    exposure: ExposureParams
    policy: PolicyParams
    search: SearchParams
    orchestration: OrchestrationParams
    deploy: DeployParams
    serve: ServeParams


def with_values(schema: type[Section], section: Section, values: dict) -> Section:
    """`section` (of type `schema`) with `values` in place, each checked against its field's type and
    bounds: the tuned values (models/tuned.json) over params.yaml's. Only those fields are looked at."""
    fields = schema.model_fields
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"tuned values {values}: {schema.__name__} has no {unknown}")
    checked = {}
    for key, value in values.items():
        field = fields[key]
        kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        try:
            checked[key] = TypeAdapter(kind).validate_python(value)
        except ValidationError as err:
            raise ConfigError(f"tuned value {key}={value!r}: {err.errors()[0]['msg']}") from err
    return section.model_copy(update=checked)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the project root)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from err
    confine_paths(params, path.resolve().parent, path)
    return params


def confine_paths(section: Section, project: Path, source: Path, prefix: str = "") -> None:
    """Every configured path, resolved (`..` and symlinks followed), must lie inside `project`, the
    params file's folder: a stage writes and hashes what these name, so one that leaves the project
    could overwrite or publish files anywhere the user can reach."""
    for name, field in type(section).model_fields.items():
        value, key = getattr(section, name), f"{prefix}{field.alias or name}"
        if isinstance(value, Section):
            confine_paths(value, project, source, key + ".")
        elif any(isinstance(mark, _ProjectPathMarker) for mark in field.metadata):
            resolved = (project / value).resolve()
            if not resolved.is_relative_to(project):
                raise ConfigError(f"{source}: {key} {value!r} resolves to {resolved}, outside the project "
                                  f"{project}: configured paths must stay inside it")
