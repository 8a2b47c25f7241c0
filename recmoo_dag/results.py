"""The results that cross modules, each owning the JSON keys of the metrics file it becomes.

Stages build them, write `to_json()`, and checks, benchmarks and tests read them back with
`from_json()`: attributes, never string paths into a dict. The keys of the metrics files are the
contract (README "Glossary" names each idea once); a list-length metric is labelled with its k
(`objectives.label`: "ndcg@10" at policy.k = 10).

    Accuracy      one scorer on one window: NDCG@k, HR@k, MRR
    Evaluation    one scorer on valid and test
    Comparison    the transformer, popularity, EASE and the blend, and the generator chosen on valid
    TrainReport   metrics/train.json: the comparison and what training did
    SearchMetrics metrics/search.json: budget, speed, front sizes, hypervolumes, the accuracy-only policy
    DeployReport  metrics/deploy.json: what is served after a deploy run, and the gate's decision
"""
from __future__ import annotations

from dataclasses import dataclass, field

from recmoo_dag.objectives import REPORTED, label

METHODS = ("nsga", "mmr_sweep", "random", "grid")  # the search and its three baselines at equal budget


def k_of(accuracy: dict) -> int:
    """The k of a report's "ndcg@k" key."""
    (key,) = [key for key in accuracy if key.startswith("ndcg@") and key.removeprefix("ndcg@").isdigit()]
    return int(key.removeprefix("ndcg@"))


MEASURES = ("ndcg", "hr", "recall", "mrr")  # a scorer's accuracy, each at cutoff k but MRR


def measure_key(name: str, k: int) -> str:
    return name if name == "mrr" else f"{name}@{k}"


@dataclass(frozen=True)
class Accuracy:
    """A scorer's full-ranking accuracy on one window: each user's mean over their held-out baskets,
    averaged over users, with the interval of each (a bootstrap over users, uncertainty.py)."""

    k: int
    values: dict[str, float]  # MEASURES -> mean over users
    intervals: dict[str, tuple[float, float]]  # MEASURES -> (low, high) at evaluation.level
    ndcg_per_basket: float  # NDCG@k averaged over baskets instead of users
    users: int
    baskets: int
    user_ndcg: object = field(default=None, compare=False, repr=False)  # (U,) per user, for paired comparisons

    @property
    def ndcg(self) -> float:
        return self.values["ndcg"]

    @property
    def hr(self) -> float:
        return self.values["hr"]

    def to_json(self) -> dict:
        out = {}
        for name in MEASURES:
            key = measure_key(name, self.k)
            out[key], out[f"{key}_ci"] = self.values[name], list(self.intervals[name])
        return {**out, f"ndcg@{self.k}_per_basket": self.ndcg_per_basket, "users": self.users, "baskets": self.baskets}

    @classmethod
    def from_json(cls, data: dict) -> Accuracy:
        k = k_of(data)
        return cls(k, {name: data[measure_key(name, k)] for name in MEASURES},
                   {name: tuple(data[f"{measure_key(name, k)}_ci"]) for name in MEASURES},
                   data[f"ndcg@{k}_per_basket"], data["users"], data["baskets"])


@dataclass(frozen=True)
class Evaluation:
    """A scorer on both windows."""

    valid: Accuracy
    test: Accuracy

    def to_json(self) -> dict:
        return {"valid": self.valid.to_json(), "test": self.test.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> Evaluation:
        return cls(Accuracy.from_json(data["valid"]), Accuracy.from_json(data["test"]))


@dataclass(frozen=True)
class Comparison:
    """The candidate generators side by side, and the one chosen on valid (generator.compare)."""

    model: Evaluation  # the transformer
    pop: Evaluation
    ease: Evaluation
    blend: Evaluation
    generator: str  # the chosen kind: "model" | "ease" | "blend"
    ease_lambda: float  # EASE's λ, chosen on valid
    blend_weight: float  # the transformer's weight in the blend, chosen on valid
    blend_valid_ndcg: dict[float, float]  # every blend weight tried -> its valid NDCG@k
    # kind ("model", "blend", "pop") -> window -> its NDCG@k over EASE's on the same users, and the interval
    vs_ease: dict[str, dict[str, tuple[float, tuple[float, float]]]]

    @property
    def k(self) -> int:
        return self.model.valid.k

    @property
    def valid_ndcg(self) -> dict[str, float]:
        """Valid NDCG@k of each kind the choice was made among."""
        return {"model": self.model.valid.ndcg, "ease": self.ease.valid.ndcg, "blend": self.blend.valid.ndcg}

    def to_json(self) -> dict:
        ndcg = label("ndcg", self.k)
        vs_ease = {kind: {window: {ndcg: ratio, f"{ndcg}_ci": list(interval)}
                          for window, (ratio, interval) in windows.items()} for kind, windows in self.vs_ease.items()}
        return {"model": self.model.to_json(), "baselines": {"pop": self.pop.to_json(), "ease": self.ease.to_json()},
                "blend": self.blend.to_json(), "generator": self.generator, "vs_ease": vs_ease,
                "choice": {"ease_lambda": self.ease_lambda, "blend_weight": self.blend_weight,
                           f"valid_{ndcg}": self.valid_ndcg,
                           f"blend_valid_{ndcg}_by_weight": {str(w): v for w, v in self.blend_valid_ndcg.items()}}}

    @classmethod
    def from_json(cls, data: dict) -> Comparison:
        model = Evaluation.from_json(data["model"])
        ndcg = label("ndcg", model.valid.k)
        choice = data["choice"]
        vs_ease = {kind: {window: (value[ndcg], tuple(value[f"{ndcg}_ci"])) for window, value in windows.items()}
                   for kind, windows in data["vs_ease"].items()}
        return cls(model, Evaluation.from_json(data["baselines"]["pop"]), Evaluation.from_json(data["baselines"]["ease"]),
                   Evaluation.from_json(data["blend"]), data["generator"], choice["ease_lambda"], choice["blend_weight"],
                   {float(w): v for w, v in choice[f"blend_valid_{ndcg}_by_weight"].items()}, vs_ease)


@dataclass(frozen=True)
class TrainReport:
    """metrics/train.json: the generators compared, and what training did."""

    comparison: Comparison
    seconds: float  # wall time of training (the one machine-dependent figure)
    steps: int  # optimizer steps run
    best_step: int  # the step of the weights kept
    item_text: str  # the item-text variant trained (model.item_text after tuning)
    item_text_valid_ndcg: dict[str, float]  # every variant tuning tried -> its best valid NDCG@k

    def to_json(self) -> dict:
        ndcg = label("ndcg", self.comparison.k)
        return {**self.comparison.to_json(), "train_seconds": round(self.seconds, 3), "steps": self.steps,
                "best_step": self.best_step,
                "item_text": {"chosen": self.item_text, f"valid_{ndcg}": self.item_text_valid_ndcg}}

    @classmethod
    def from_json(cls, data: dict) -> TrainReport:
        comparison = Comparison.from_json(data)
        return cls(comparison, data["train_seconds"], data["steps"], data["best_step"], data["item_text"]["chosen"],
                   data["item_text"][f"valid_{label('ndcg', comparison.k)}"])


@dataclass(frozen=True)
class SearchMetrics:
    """metrics/search.json: the search's budget and speed, front sizes, each method's hypervolume on
    valid, on test and as searched, the accuracy-only policy's objectives, and the users scored."""

    n_evals: int
    seconds: float
    front_size: int  # policies in front.csv
    front_size_before_thinning: int  # NSGA's non-dominated policies
    hypervolume: dict[str, float]  # method -> on valid (every validation user)
    hypervolume_test: dict[str, float]
    hypervolume_searched: dict[str, float]  # what the search saw: its user sample, before any thinning
    accuracy_only: dict[str, dict[str, float]]  # window -> objective -> value
    users_searched: int  # the validation users whose baskets the search scored
    baskets_searched: int
    paired_se_searched: float  # SE of a policy's paired NDCG difference with accuracy-only, share of its NDCG
    paired_se_all: float

    def to_json(self) -> dict:
        rounded = lambda values: {m: round(v, 6) for m, v in values.items()}
        return {"n_evals": self.n_evals, "seconds": round(self.seconds, 3),
                "evals_per_second": round(self.n_evals / self.seconds, 1), "front_size": self.front_size,
                "front_size_before_thinning": self.front_size_before_thinning,
                "hypervolume": rounded(self.hypervolume), "hypervolume_test": rounded(self.hypervolume_test),
                "hypervolume_searched": rounded(self.hypervolume_searched),
                "accuracy_only": {window: rounded(values) for window, values in self.accuracy_only.items()},
                "users": {"searched": self.users_searched, "baskets_searched": self.baskets_searched,
                          "paired_se_searched": round(self.paired_se_searched, 6),
                          "paired_se_all": round(self.paired_se_all, 6)}}

    @classmethod
    def from_json(cls, data: dict) -> SearchMetrics:
        users = data["users"]
        return cls(data["n_evals"], data["seconds"], data["front_size"], data["front_size_before_thinning"],
                   data["hypervolume"], data["hypervolume_test"], data["hypervolume_searched"], data["accuracy_only"],
                   users["searched"], users["baskets_searched"], users["paired_se_searched"], users["paired_se_all"])


def _labelled(values: dict | None, intervals: dict | None, k: int) -> dict | None:
    """{label: value, label_ci: [low, high]} of JUDGED objectives ("ndcg@10", "ndcg@10_ci", ...),
    and of the catalogue figures where given (a policy's figures; ratios are of JUDGED only)."""
    if values is None:
        return None
    out = {}
    for name in [name for name in REPORTED if name in values]:
        out[label(name, k)] = values[name]
        if intervals is not None:
            out[f"{label(name, k)}_ci"] = list(intervals[name]) if intervals[name] is not None else None
    return out


def _by_name(data: dict | None, k: int) -> tuple[dict | None, dict | None]:
    if data is None:
        return None, None
    names = [name for name in REPORTED if label(name, k) in data]  # reports before CATALOGUE lack it
    values = {name: data[label(name, k)] for name in names}
    intervals = {name: tuple(data[f"{label(name, k)}_ci"]) if data.get(f"{label(name, k)}_ci") else None
                 for name in names}
    return values, intervals


@dataclass(frozen=True)
class DeployReport:
    """metrics/deploy.json: what is served after the run (see deploy.py), by objective name, with the
    intervals of every figure and of every ratio to the accuracy-only policy (paired over users)."""

    k: int
    version: str | None  # the served version, None when nothing is served
    policy: dict  # its decision variables by name
    fallback: dict | None  # why the accuracy-only policy is served instead, or None
    accuracy_only: dict[str, float]  # test figures of the accuracy-only policy, by name (objectives.REPORTED)
    accuracy_only_ci: dict[str, tuple[float, float]]
    deployed: dict[str, float | None]  # test figures of what is served (or of the rejected candidate)
    deployed_ci: dict[str, tuple[float, float] | None]
    ratio: dict[str, float] | None  # deployed over accuracy-only on test, paired
    ratio_ci: dict[str, tuple[float, float]] | None
    valid_ratio: dict[str, float] | None  # the chosen policy over accuracy-only on the held-out valid users
    valid_ratio_ci: dict[str, tuple[float, float]] | None
    promoted: bool
    reason: str
    power: float  # the probability the needed ratios are stated at
    needed: dict[str, float] | None  # per bounded objective, the true test ratio to accuracy-only the gate
    # certifies with that probability on these users (uncertainty.Ratio.needed); None without a candidate

    def to_json(self) -> dict:
        return {"version": self.version, "policy": self.policy, "fallback": self.fallback,
                "test": {"accuracy_only": _labelled(self.accuracy_only, self.accuracy_only_ci, self.k),
                         "deployed": _labelled(self.deployed, self.deployed_ci, self.k),
                         "ratio": _labelled(self.ratio, self.ratio_ci, self.k)},
                "valid": {"ratio": _labelled(self.valid_ratio, self.valid_ratio_ci, self.k)},
                "gate": {"promoted": self.promoted, "reason": self.reason,
                         "power": {"probability": self.power, "ratio_needed": _labelled(self.needed, None, self.k)}}}

    @classmethod
    def from_json(cls, data: dict) -> DeployReport:
        k = k_of(data["test"]["accuracy_only"])
        test = data["test"]
        # A report written before gate.power (a project's last deploy under older code) states none.
        power = data["gate"].get("power", {"probability": float("nan"), "ratio_needed": None})
        return cls(k, data["version"], data["policy"], data["fallback"], *_by_name(test["accuracy_only"], k),
                   *_by_name(test["deployed"], k), *_by_name(test["ratio"], k), *_by_name(data["valid"]["ratio"], k),
                   data["gate"]["promoted"], data["gate"]["reason"], power["probability"],
                   _by_name(power["ratio_needed"], k)[0])
