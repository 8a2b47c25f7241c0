"""`recmoo train [--resume]`: fit the transformer, compare it with most-popular, EASE and their blend,
choose the candidate generator on valid, write the model and the choice."""
from __future__ import annotations

import json
from pathlib import Path

from recmoo_dag.config import ModelParams, Params, TrainParams, with_values
from recmoo_dag.errors import InputError
from recmoo_dag.features import load_features
from recmoo_dag.generator import compare, save_generator
from recmoo_dag.io import combined_digest, hash_files, write_json
from recmoo_dag.item_text import load_vectors
from recmoo_dag.model import n_parameters, save_model
from recmoo_dag.objectives import label
from recmoo_dag.results import TrainReport
from recmoo_dag.train import fit, run_fingerprint


def tuned(params: Params) -> tuple[ModelParams, TrainParams, dict]:
    """model and train with the tune stage's chosen values in place, and the choice itself."""
    chosen = Path(params.tune.chosen)
    if not chosen.is_file():
        raise InputError(f"{chosen}: no tuned values here (run `recmoo tune`)")
    values = json.loads(chosen.read_text())
    return (with_values(ModelParams, params.model, values["model"]), with_values(TrainParams, params.train, values["train"]),
            values)


def main(params: Params, resume: bool = False) -> None:
    model, train, choice = tuned(params)
    k = params.policy.k
    features = load_features(params.features.dir)
    texts = load_vectors(params.item_text.dir) if model.item_text != "none" else None
    data_hash = combined_digest(hash_files([params.features.dir, *([params.item_text.dir] if texts is not None else [])]))
    run_id = run_fingerprint(model, train, params.seed, data_hash)
    result = fit(features, model, train, k, params.seed, run_id, resume, text_vectors=texts)
    if result is None:  # a DDP worker other than rank 0: the launcher reports and writes
        return
    comparison, generator = compare(features, result.model, train.ease_lambdas, train.eval_batch_size, k,
                                     params.evaluation, params.seed)
    architecture = {"n_items": features.n_items, **model.model_dump(),
                    "text_dim": texts.shape[1] if model.item_text == "fuse" else 0}
    ndcg = label("ndcg", k)
    save_model(result.model, train.model_dir, architecture=architecture,
               provenance={"features_dir": params.features.dir, "data_hash": data_hash, "seed": params.seed,
                           "train": train.model_dump(), "run": run_id, "steps": result.steps,
                           "best_step": result.best_step, f"best_valid_{ndcg}": result.best_valid_ndcg})
    save_generator(train.model_dir, generator.kind, generator.ease_lambda, generator.blend_weight)
    report = TrainReport(comparison, result.seconds, result.steps, result.best_step, model.item_text,
                         choice.get(f"item_text_valid_{ndcg}", {}))
    write_json(train.metrics, report.to_json())
    test = ", ".join(f"{name} {evaluation.test.ndcg:.4f}" for name, evaluation in (
        ("model", comparison.model), ("blend", comparison.blend), ("ease", comparison.ease), ("pop", comparison.pop)))
    print(f"train: {n_parameters(result.model):,} parameters, item text {model.item_text}, best of {result.steps} "
          f"steps at step {result.best_step} ({result.seconds:.1f}s); test {ndcg} {test}; generator: {generator.kind} "
          f"(chosen on valid)")
