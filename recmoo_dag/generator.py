"""The candidate generator: what ranks the whole catalog for the re-ranker, chosen on valid NDCG@k.

Three kinds: the transformer ("model"), EASE ("ease", Steck 2019) and a blend of the two. The blend
standardizes each case's scores over the real items (z-scores: the transformer's logits and EASE's
regression outputs live on unrelated scales) and mixes them with a weight w on the transformer:

    s(u, i) = w z_model(u, i) + (1 - w) z_ease(u, i)

w is tuned on valid over BLEND_WEIGHTS (strictly between 0 and 1: the ends are the two parts). The
generator is chosen on valid as a test (`choose_kind`): EASE, the simplest, unless the transformer
or the blend beats it with confidence, paired user by user; a difference inside its interval is a
tie, and a tie goes to the simpler. Test is reported for all three and looked at for no choice.

EASE is fit on the events before the window it scores (train for valid, train + valid for test,
every user's whole sequence in a deployed version, whose bundle stores the weights). On disk, beside the
transformer in train.model_dir: generator.json {"kind", "blend_weight", "ease_lambda"}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recmoo_dag.baselines import ease_scorer, evaluate_baselines, fit_ease
from recmoo_dag.config import EvaluationParams
from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import Scorer, batches, evaluate, left_padded, masked_scores, model_scorer
from recmoo_dag.features import Features
from recmoo_dag.io import atomic_write
from recmoo_dag.metrics import basket_accuracy, case_weights, target_ranks
from recmoo_dag.model import SeqRecModel, load_model
from recmoo_dag.results import Accuracy, Comparison, Evaluation
from recmoo_dag.uncertainty import Bootstrap
from recmoo_dag.windows import Cases, Histories, histories_of

GENERATOR_FILE = "generator.json"
KINDS = ("model", "ease", "blend")
BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def standardized(scores: np.ndarray) -> np.ndarray:
    """Each row's scores over the real items (columns 1..I) as z-scores; column 0 (padding) -inf.
    (B, I + 1) -> (B, I + 1) float32."""
    real = np.asarray(scores[:, 1:], dtype=np.float64)  # (B, I)
    mean = real.mean(axis=1, keepdims=True)
    std = np.maximum(real.std(axis=1, keepdims=True), 1e-12)  # a constant row (no history for EASE): all 0
    out = np.full(scores.shape, -np.inf, dtype=np.float32)
    out[:, 1:] = (real - mean) / std
    return out


def blend(model_scores: np.ndarray, ease_scores: np.ndarray, weight: float) -> np.ndarray:
    """w z_model + (1 - w) z_ease per row: (B, I + 1) each -> (B, I + 1) float32."""
    return (weight * standardized(model_scores) + (1.0 - weight) * standardized(ease_scores)).astype(np.float32)


@dataclass(frozen=True)
class Generator:
    kind: str  # "model" | "ease" | "blend"
    model: SeqRecModel
    ease_lambda: float
    blend_weight: float  # the transformer's weight in the blend

    @property
    def uses_ease(self) -> bool:
        return self.kind != "model"

    def combine(self, model_scores: np.ndarray | None, ease_scores: np.ndarray | None) -> np.ndarray:
        """The generator's scores from its parts, (B, I + 1) each (None for a part it does not use):
        (B, I + 1) float32, column 0 (padding) -inf."""
        if self.kind == "model":
            scores = model_scores
        elif self.kind == "ease":
            scores = ease_scores
        else:
            scores = blend(model_scores, ease_scores, self.blend_weight)
        scores = np.array(scores, dtype=np.float32)
        scores[:, 0] = -np.inf
        return scores

    def scorer(self, fit: Histories, history: Histories, ease: np.ndarray | None = None) -> Scorer:
        """Scores of every item after each row of `history`: a `Scorer`. EASE's weights are fit on
        the histories `fit` unless `ease` (I + 1, I + 1) is given."""
        if self.kind == "model":
            return model_scorer(self.model, history)
        n_items = self.model.n_items
        ease_part = ease_scorer(history, ease if ease is not None else fit_ease(fit, n_items, self.ease_lambda), n_items)
        if self.kind == "ease":
            return ease_part
        model_part = model_scorer(self.model, history)
        return lambda rows: blend(model_part(rows), ease_part(rows), self.blend_weight)


def save_generator(directory: str | Path, kind: str, ease_lambda: float, blend_weight: float) -> None:
    text = json.dumps({"kind": kind, "ease_lambda": ease_lambda, "blend_weight": blend_weight}, indent=2,
                      sort_keys=True) + "\n"
    atomic_write(Path(directory) / GENERATOR_FILE, lambda tmp: tmp.write_text(text))


def load_generator(directory: str | Path) -> Generator:
    """The generator the train stage chose, with its transformer, from train.model_dir (or a bundle's model/)."""
    path = Path(directory) / GENERATOR_FILE
    if not path.is_file():
        raise InputError(f"{path}: no generator choice here (re-run `recmoo train`)")
    choice = json.loads(path.read_text())
    if choice.get("kind") not in KINDS:
        raise InputError(f"{path}: kind {choice.get('kind')!r} is not one of {KINDS}")
    return Generator(choice["kind"], load_model(directory), float(choice["ease_lambda"]),
                     float(choice["blend_weight"]))


def tune_blend(model: SeqRecModel, ease: np.ndarray, cases: Cases, batch_size: int, k: int) -> dict[float, float]:
    """Valid NDCG@k (per basket) of the blend at every weight of BLEND_WEIGHTS, each case scored once per part."""
    n_items = model.n_items
    model_part, ease_part = model_scorer(model, cases.history), ease_scorer(cases.history, ease, n_items)
    gains = {w: [] for w in BLEND_WEIGHTS}
    for rows in batches(cases.n_cases, batch_size):
        sub = cases.subset(rows)
        z_model, z_ease = standardized(model_part(rows)), standardized(ease_part(rows))
        for w in BLEND_WEIGHTS:
            mixed = (w * z_model + (1.0 - w) * z_ease).astype(np.float32)
            scores = masked_scores(lambda _, scores=mixed: scores, cases.history, rows, n_items)
            ranks = target_ranks(scores, sub.target_rows, sub.targets)
            gains[w].append(basket_accuracy(ranks, sub.target_indptr, k)["ndcg"])
    weights = case_weights(cases.users)  # each user once, as every report averages
    return {w: float(np.concatenate(g) @ weights) for w, g in gains.items()}


def choose_kind(transformer: Evaluation, ease: Evaluation, blend_: Evaluation, boot: Bootstrap,
                confidence: float) -> str:
    """The generator, chosen as a test on valid: EASE, the simplest, unless the transformer or the
    blend beats it with `confidence` (the one-sided lower bound of its NDCG@k ratio to EASE's,
    paired over users, above 1); of those that do, the better on valid, ties to the simpler."""
    better = {kind: evaluation.valid.ndcg for kind, evaluation in (("model", transformer), ("blend", blend_))
              if boot.ratio_lower(evaluation.valid.user_ndcg, ease.valid.user_ndcg, confidence) > 1.0}
    return max(better, key=lambda kind: (better[kind], -KINDS.index(kind))) if better else "ease"


def compare(features: Features, model: SeqRecModel, ease_lambdas: list[float], batch_size: int, k: int,
            evaluation: EvaluationParams, seed: int) -> tuple[Comparison, Generator]:
    """The transformer, most-popular, EASE (λ on valid) and the blend (w on valid) on valid and test,
    their NDCG@k ratios to EASE with intervals, and the generator chosen on valid (`choose_kind`)."""
    pop, ease, lam, _ = evaluate_baselines(features, ease_lambdas, batch_size, k, evaluation, seed)
    transformer = evaluate(lambda fit, history: model_scorer(model, history), features, batch_size, k, evaluation, seed)
    fit = fit_ease(features.history_before("valid"), features.n_items, lam)
    by_weight = tune_blend(model, fit, features.cases("valid"), batch_size, k)
    weight = max(BLEND_WEIGHTS, key=lambda w: by_weight[w])  # ties: the first, i.e. the smaller weight
    mixed = evaluate(Generator("blend", model, lam, weight).scorer, features, batch_size, k, evaluation, seed)
    boots = {window: Bootstrap(getattr(ease, window).users, evaluation.replicates, seed) for window in ("valid", "test")}
    ratios = {kind: {window: ratio_to(getattr(other, window), getattr(ease, window), boots[window], evaluation.level)
                     for window in ("valid", "test")}
              for kind, other in (("model", transformer), ("blend", mixed), ("pop", pop))}
    kind = choose_kind(transformer, ease, mixed, boots["valid"], evaluation.level)
    comparison = Comparison(transformer, pop, ease, mixed, kind, lam, weight, by_weight, ratios)
    return comparison, Generator(kind, model, lam, weight)


def ratio_to(accuracy: Accuracy, reference: Accuracy, boot: Bootstrap, level: float) -> tuple[float, tuple[float, float]]:
    """NDCG@k of `accuracy` over `reference`'s, on the same users, and its interval."""
    low, high = boot.ratio_interval(accuracy.user_ndcg, reference.user_ndcg, level)
    return accuracy.ndcg / reference.ndcg, (float(low), float(high))


def sequence_scores(generator: Generator, sequence: np.ndarray, opens: np.ndarray, window: int,
                    ease: np.ndarray | None) -> np.ndarray:
    """Scores of every item after one sequence, oldest first (a live session): sequence (E,) items,
    opens (E,) True where an item starts a basket -> (I + 1,) float32, padding -inf. The transformer
    reads the last baskets that fit `window` items, EASE the whole sequence (`ease`: its weights,
    fit on the full sequences at deploy)."""
    import torch

    sequence = np.asarray(sequence, dtype=np.int32)
    model_scores = ease_scores = None
    if generator.kind != "ease":
        history = histories_of(np.array([0, len(sequence)]), sequence, opens)
        seq, baskets = left_padded(history, np.array([0]), min(window, generator.model.max_len))
        with torch.inference_mode():
            model_scores = generator.model.score_next(torch.from_numpy(seq), torch.from_numpy(baskets)).numpy()
    if generator.kind != "model":
        ease_scores = ease[np.unique(sequence)].sum(axis=0, dtype=np.float32)[None]  # (1, I + 1): x_u B
    return generator.combine(model_scores, ease_scores)[0]
