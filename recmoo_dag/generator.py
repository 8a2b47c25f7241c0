"""The candidate generator: what ranks the whole catalog for the re-ranker, chosen on valid NDCG@k.

Three kinds: the transformer ("model"), EASE ("ease", Steck 2019) and a blend of the two. The blend
standardizes each user's scores over the real items (z-scores: the transformer's logits and EASE's
regression outputs live on unrelated scales) and mixes them with a weight w on the transformer:

    s(u, i) = w z_model(u, i) + (1 - w) z_ease(u, i)

w is tuned on valid over BLEND_WEIGHTS (strictly between 0 and 1: the ends are the two parts), and
the kind with the best valid NDCG@k is the generator; ties go to the simpler one (model, then EASE,
then the blend). Test is reported for all three and looked at for no choice.

EASE is fit on the histories its scores are for (train for valid, train + valid for test, every
user's whole sequence in a deployed version, whose bundle stores the weights). On disk, beside the
transformer in train.model_dir: generator.json {"kind", "blend_weight", "ease_lambda"}.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recmoo_dag.baselines import ease_scorer, evaluate_baselines, fit_ease, history_matrix
from recmoo_dag.errors import InputError
from recmoo_dag.evaluate import Scorer, evaluate, masked_scores, model_scorer
from recmoo_dag.features import Features
from recmoo_dag.io import atomic_write
from recmoo_dag.metrics import ndcg_at_k, rank_of_targets
from recmoo_dag.model import SeqRecModel, load_model
from recmoo_dag.results import Comparison

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

    def scorer(self, indptr: np.ndarray, items: np.ndarray, ease: np.ndarray | None = None) -> Scorer:
        """Scores of every item after each user's history (indptr, items): a `Scorer`. EASE's
        weights are fit on these histories unless `ease` (I + 1, I + 1) is given."""
        if self.kind == "model":
            return model_scorer(self.model, indptr, items)
        n_items = self.model.n_items
        weights = ease if ease is not None else fit_ease(indptr, items, n_items, self.ease_lambda)
        ease_part = ease_scorer(history_matrix(indptr, items, n_items), weights)
        if self.kind == "ease":
            return ease_part
        model_part = model_scorer(self.model, indptr, items)
        return lambda users: blend(model_part(users), ease_part(users), self.blend_weight)


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


def tune_blend(model: SeqRecModel, ease: np.ndarray, indptr: np.ndarray, items: np.ndarray, targets: np.ndarray,
               batch_size: int, k: int) -> dict[float, float]:
    """Valid NDCG@k of the blend at every weight of BLEND_WEIGHTS, each user scored once per part."""
    n_items = model.n_items
    model_part = model_scorer(model, indptr, items)
    ease_part = ease_scorer(history_matrix(indptr, items, n_items), ease)
    ranks = {w: [] for w in BLEND_WEIGHTS}
    n_users = len(indptr) - 1
    for users in np.array_split(np.arange(n_users), max(1, -(-n_users // batch_size))):
        z_model = standardized(model_part(users))
        z_ease = standardized(ease_part(users))
        for w in BLEND_WEIGHTS:
            mixed = (w * z_model + (1.0 - w) * z_ease).astype(np.float32)
            scores = masked_scores(lambda _, rows=mixed: rows, indptr, items, users, n_items)
            ranks[w].append(rank_of_targets(scores, targets[users]))
    return {w: ndcg_at_k(np.concatenate(r), k) for w, r in ranks.items()}


def choose_kind(valid_ndcg: dict[str, float]) -> str:
    """The kind with the best valid NDCG@k; ties to the simpler (KINDS order)."""
    return max(KINDS, key=lambda kind: (valid_ndcg[kind], -KINDS.index(kind)))


def compare(features: Features, model: SeqRecModel, ease_lambdas: list[float], batch_size: int,
            k: int) -> tuple[Comparison, Generator]:
    """The transformer, most-popular, EASE (λ on valid) and the blend (w on valid) on valid and test,
    and the generator chosen among model, EASE and blend on valid NDCG@k."""
    pop, ease, lam, _ = evaluate_baselines(features, ease_lambdas, batch_size, k)
    transformer = evaluate(lambda indptr, items: model_scorer(model, indptr, items), features, batch_size, k)
    indptr, items = features.history_before("valid")
    by_weight = tune_blend(model, fit_ease(indptr, items, features.n_items, lam), indptr, items,
                           features.valid_targets, batch_size, k)
    weight = max(BLEND_WEIGHTS, key=lambda w: by_weight[w])  # ties: the first, i.e. the smaller weight
    mixed = evaluate(Generator("blend", model, lam, weight).scorer, features, batch_size, k)
    comparison = Comparison(transformer, pop, ease, mixed, "", lam, weight, by_weight)
    kind = choose_kind(comparison.valid_ndcg)
    return replace(comparison, generator=kind), Generator(kind, model, lam, weight)


def sequence_scores(generator: Generator, sequence: np.ndarray, window: int, ease: np.ndarray | None) -> np.ndarray:
    """Scores of every item after one sequence, oldest first (a live session): (E,) -> (I + 1,) float32,
    padding -inf. The transformer reads the last `window` items, EASE the whole sequence (`ease`: its
    weights, fit on the full sequences at deploy)."""
    import torch

    sequence = np.asarray(sequence, dtype=np.int64)
    model_scores = ease_scores = None
    if generator.kind != "ease":
        with torch.inference_mode():
            model_scores = generator.model.score_next(torch.from_numpy(sequence[-window:][None])).numpy()  # (1, I + 1)
    if generator.kind != "model":
        ease_scores = ease[np.unique(sequence)].sum(axis=0, dtype=np.float32)[None]  # (1, I + 1): x_u B
    if generator.kind == "model":
        scores = model_scores
    elif generator.kind == "ease":
        scores = ease_scores
    else:
        scores = blend(model_scores, ease_scores, generator.blend_weight)
    scores = np.array(scores[0], dtype=np.float32)
    scores[0] = -np.inf
    return scores
